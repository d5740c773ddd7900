//! The catalog: filters, pagination edges, enums, locale.

use cobro_sdk::SkuListQuery;
use cobro_types::{Provider, SkuCategory};

use crate::common::*;

fn q() -> SkuListQuery {
    SkuListQuery::default()
}

#[tokio::test]
async fn the_demo_catalog_is_listed_with_the_sdk_envelope() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    let page = c.list_skus(&q()).await.expect("list");
    assert!(page.total >= 60, "total {}", page.total);
    assert_eq!((page.page, page.limit, page.data.len() as u64), (1, 10, 10));
    assert_eq!(page.total_pages, page.total.div_ceil(10));
    let all = c
        .list_skus(&SkuListQuery {
            limit: Some(100),
            ..q()
        })
        .await
        .expect("list");
    let categories: std::collections::HashSet<_> = all.data.iter().map(|s| s.category).collect();
    assert!(categories.len() >= 10);
    assert!(
        all.data.iter().all(|s| s.id != "sku-stp-STP099"),
        "inactive SKUs are not listed"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_filter_selects_only_matching_skus() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    let list = |query: SkuListQuery| {
        let c = c.clone();
        async move {
            c.list_skus(&SkuListQuery {
                limit: Some(100),
                ..query
            })
            .await
            .expect("list")
        }
    };
    let total = list(q()).await.total;

    let chipi = list(SkuListQuery {
        provider: Some("CHIPI".into()),
        ..q()
    })
    .await;
    assert!(chipi.total > 0 && chipi.total < total);
    assert!(chipi.data.iter().all(|s| s.provider == Provider::Chipi));
    let tet = list(SkuListQuery {
        provider: Some("TET".into()),
        ..q()
    })
    .await;
    assert_eq!(tet.total + chipi.total, total);

    let luz = list(SkuListQuery {
        category: Some("LUZ".into()),
        ..q()
    })
    .await;
    assert!(luz.total > 0 && luz.data.iter().all(|s| s.category == SkuCategory::Luz));

    let recargas = list(SkuListQuery {
        chipi_category: Some("RECARGAS".into()),
        ..q()
    })
    .await;
    assert!(recargas.total > 0 && recargas.data.iter().all(|s| s.chipi_category == "RECARGAS"));
    let lower = list(SkuListQuery {
        chipi_category: Some("recargas".into()),
        ..q()
    })
    .await;
    assert_eq!(
        lower.total, recargas.total,
        "chipiCategory is case-insensitive"
    );

    let telcel = list(SkuListQuery {
        carrier_name: Some("tElCeL".into()),
        ..q()
    })
    .await;
    assert!(
        telcel.total > 0
            && telcel
                .data
                .iter()
                .all(|s| s.carrier_name.to_lowercase().contains("telcel"))
    );
    let att = list(SkuListQuery {
        carrier_name: Some("AT&T".into()),
        ..q()
    })
    .await;
    assert!(att.total > 0, "special characters survive URL encoding");

    let combined = list(SkuListQuery {
        chipi_category: Some("RECARGAS".into()),
        carrier_name: Some("telcel".into()),
        provider: Some("TET".into()),
        ..q()
    })
    .await;
    assert!(combined.total > 0 && combined.total <= telcel.total);
    assert!(
        combined
            .data
            .iter()
            .all(|s| s.chipi_category == "RECARGAS" && s.carrier_name.contains("Telcel"))
    );

    let nothing = list(SkuListQuery {
        carrier_name: Some("no such carrier".into()),
        ..q()
    })
    .await;
    assert_eq!(
        (nothing.total, nothing.total_pages, nothing.data.len()),
        (0, 0, 0)
    );
    app.stop().await;
}

#[tokio::test]
async fn telefonica_is_accepted_as_telefonia() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    let a = c
        .list_skus(&SkuListQuery {
            category: Some("TELEFONICA".into()),
            limit: Some(100),
            ..q()
        })
        .await
        .expect("list");
    let b = c
        .list_skus(&SkuListQuery {
            category: Some("TELEFONIA".into()),
            limit: Some(100),
            ..q()
        })
        .await
        .expect("list");
    assert!(a.total > 0);
    assert_eq!(a, b);
    assert!(a.data.iter().all(|s| s.category == SkuCategory::Telefonia));
    app.stop().await;
}

#[tokio::test]
async fn pagination_edges_are_validated_or_empty() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    for (limit, page, offset, param) in [
        (Some(0), None, None, "limit"),
        (Some(101), None, None, "limit"),
        (None, Some(0), None, "page"),
    ] {
        match c
            .list_skus(&SkuListQuery {
                limit,
                page,
                offset,
                ..q()
            })
            .await
        {
            Err(cobro_sdk::Error::Api {
                status: 400,
                code,
                param: p,
                ..
            }) => {
                assert_eq!(
                    (code.as_str(), p.as_deref()),
                    ("INVALID_PARAMETER", Some(param))
                );
            }
            other => panic!("expected 400 for {param}, got {other:?}"),
        }
    }
    let edge = c
        .list_skus(&SkuListQuery {
            limit: Some(100),
            ..q()
        })
        .await
        .expect("limit 100 is fine");
    assert_eq!(edge.limit, 100);
    let past = c
        .list_skus(&SkuListQuery {
            page: Some(999),
            limit: Some(10),
            ..q()
        })
        .await
        .expect("past the end");
    assert_eq!((past.data.len(), past.page), (0, 999));
    assert_eq!(past.total, edge.total);

    // pages tile the catalog exactly, without overlap
    let mut seen = Vec::new();
    for page in 1..=edge.total.div_ceil(7) {
        let p = c
            .list_skus(&SkuListQuery {
                page: Some(page),
                limit: Some(7),
                ..q()
            })
            .await
            .expect("page");
        seen.extend(p.data.into_iter().map(|s| s.id));
    }
    let expected: Vec<String> = edge.data.iter().map(|s| s.id.clone()).collect();
    assert_eq!(seen, expected);

    let by_offset = c
        .list_skus(&SkuListQuery {
            offset: Some(7),
            limit: Some(7),
            ..q()
        })
        .await
        .expect("offset");
    assert_eq!(by_offset.page, 2);
    assert_eq!(
        by_offset.data.first().map(|s| s.id.as_str()),
        expected.get(7).map(String::as_str)
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_enum_values_and_bad_numbers_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    let cases: [(&str, &str); 6] = [
        ("category", "COMIDA"),
        ("provider", "ACME"),
        ("locale", "fr"),
        ("limit", "ten"),
        ("offset", "-1"),
        ("chipiCategory", "not a code!"),
    ];
    for (param, value) in cases {
        let r: Result<serde_json::Value, _> =
            c.get("/v1/skus", &[(param, value.to_string())]).await;
        match r {
            Err(cobro_sdk::Error::Api {
                status: 400,
                code,
                param: p,
                message,
                ..
            }) => {
                assert_eq!(
                    (code.as_str(), p.as_deref()),
                    ("INVALID_PARAMETER", Some(param))
                );
                assert!(message.contains(param), "{message}");
            }
            other => panic!("{param}={value}: expected 400, got {other:?}"),
        }
    }
    // unknown parameters (the SDK's version marker among them) are ignored
    let r: Result<serde_json::Value, _> =
        c.get("/v1/skus", &[("utm_source", "x".to_string())]).await;
    assert!(r.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn locale_switches_names_and_labels_to_spanish() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    let en = c.get_sku("sku-tl-TEL010", None).await.expect("en");
    let es = c.get_sku("sku-tl-TEL010", Some("es")).await.expect("es");
    assert_eq!(en.id, es.id);
    assert_ne!(en.name, es.name);
    assert_ne!(en.reference_label, es.reference_label);
    assert_eq!(en.fixed_amount, es.fixed_amount);
    let es_mx = c
        .get_sku("sku-tl-TEL010", Some("es-MX"))
        .await
        .expect("es-MX");
    assert_eq!(es_mx.name, es.name);
    let listed = c
        .list_skus(&SkuListQuery {
            locale: Some("es".into()),
            carrier_name: Some("telcel".into()),
            limit: Some(100),
            ..q()
        })
        .await
        .expect("list");
    assert!(listed.data.iter().any(|s| s.name == es.name));
    app.stop().await;
}

#[tokio::test]
async fn a_single_sku_has_the_reference_shape_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    let raw: serde_json::Value = c.get("/v1/skus/sku-tl-TEL010", &[]).await.expect("raw");
    for field in [
        "id",
        "providerId",
        "name",
        "category",
        "referenceRegexValidation",
        "referenceLabel",
        "amountRegexValidation",
        "amountLabel",
        "fixedAmount",
        "currency",
        "canCheckSkuReference",
        "createdAt",
        "updatedAt",
        "provider",
        "chipiCategory",
        "carrierName",
    ] {
        assert!(raw.get(field).is_some(), "missing {field}");
    }
    assert_eq!(
        raw["fixedAmount"],
        serde_json::json!(10),
        "whole amounts are JSON integers"
    );
    assert_eq!(raw["referenceRegexValidation"], "^[0-9]{10}$");
    assert_eq!(raw["category"], "TELEFONIA");

    let cfe = c
        .list_skus(&SkuListQuery {
            category: Some("LUZ".into()),
            ..q()
        })
        .await
        .expect("list");
    let variable = cfe.data.first().expect("a CFE SKU");
    assert!(
        variable.fixed_amount.is_none(),
        "variable-amount SKUs omit fixedAmount"
    );

    assert_api_error(
        c.get_sku("sku-does-not-exist", None).await,
        404,
        "SKU_NOT_FOUND",
    );
    assert_api_error(
        c.get_sku("sku-stp-STP099", None).await,
        404,
        "SKU_NOT_FOUND",
    );
    app.stop().await;
}
