//! Authentication: every failure of the guard is a 401 with a stable code.

use std::time::{Duration, Instant};

use axum::{Router, routing::get};
use cobro_server::{
    admin::{self, KeyOptions},
    auth::{CustomerCaller, OrgCaller, Principal},
};
use cobro_types::Environment;
use serde_json::json;

use crate::common::*;

const ISS: &str = "https://idp.test";
const AUD: &str = "cobro-app";

/// An app plus a key whose customer JWTs are verified against a JWKS served by the test.
async fn with_external_idp(
    signers: &[&Signer],
) -> (TestApp, JwksServer, cobro_types::ApiKeyCreated) {
    let app = spawn_app().await;
    let jwks = JwksServer::start(signers.iter().map(|s| s.jwk()).collect()).await;
    let key = app
        .create_key(
            Environment::Dev,
            KeyOptions {
                jwks_url: Some(jwks.url()),
                issuer: Some(ISS.into()),
                audience: Some(AUD.into()),
            },
        )
        .await;
    (app, jwks, key)
}

#[tokio::test]
async fn customer_jwts_signed_with_rs256_es256_and_eddsa_are_accepted() {
    let signers = [
        Signer::new(Alg::Rs256, "rsa-1"),
        Signer::new(Alg::Es256, "ec-1"),
        Signer::new(Alg::EdDsa, "ed-1"),
    ];
    let (app, jwks, key) = with_external_idp(&signers.iter().collect::<Vec<_>>()).await;
    for s in &signers {
        let token = s.sign(&claims("user-42", ISS, AUD));
        let sku = app
            .client(&key.public_key, &token)
            .get_sku("sku-tl-TEL010", None)
            .await;
        assert_eq!(
            sku.map(|s| s.id).ok().as_deref(),
            Some("sku-tl-TEL010"),
            "{}",
            s.alg_name()
        );
    }
    assert_eq!(jwks.hits(), 1, "the JWKS is fetched once and cached");
    app.stop().await;
}

#[tokio::test]
async fn every_authentication_failure_is_a_401_with_its_own_code() {
    let rsa = Signer::new(Alg::Rs256, "rsa-1");
    let (app, _jwks, key) = with_external_idp(&[&rsa]).await;
    let pk = key.public_key.as_str();
    let sku = |c: cobro_sdk::Client| async move { c.get_sku("sku-tl-TEL010", None).await };
    let good = rsa.sign(&claims("user-1", ISS, AUD));

    // x-api-key problems
    let no_key = cobro_sdk::Client::new(&app.url)
        .expect("client")
        .with_bearer(&good);
    assert_api_error(sku(no_key).await, 401, "MISSING_API_KEY");
    assert_api_error(
        sku(app.client("not-a-key", &good)).await,
        401,
        "INVALID_API_KEY",
    );
    assert_api_error(
        sku(app.client("pk_dev_0000000000000000000000000000000000", &good)).await,
        401,
        "INVALID_API_KEY",
    );

    // bearer problems
    let no_bearer = cobro_sdk::Client::new(&app.url)
        .expect("client")
        .with_api_key(pk);
    assert_api_error(sku(no_bearer).await, 401, "MISSING_AUTHORIZATION");
    assert_api_error(
        sku(app.client(pk, "not.a.jwt")).await,
        401,
        "MALFORMED_TOKEN",
    );
    assert_api_error(sku(app.client(pk, "garbage")).await, 401, "MALFORMED_TOKEN");

    let t = now();
    let expired =
        rsa.sign(&json!({"sub": "u", "iss": ISS, "aud": AUD, "exp": t - 3600, "iat": t - 7200}));
    assert_api_error(sku(app.client(pk, &expired)).await, 401, "TOKEN_EXPIRED");
    let early =
        rsa.sign(&json!({"sub": "u", "iss": ISS, "aud": AUD, "exp": t + 7200, "nbf": t + 3600}));
    assert_api_error(
        sku(app.client(pk, &early)).await,
        401,
        "TOKEN_NOT_YET_VALID",
    );

    // alg: none, with an empty signature
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims("u", ISS, AUD).to_string().as_bytes())
    );
    assert_api_error(
        sku(app.client(pk, &none)).await,
        401,
        "UNSUPPORTED_TOKEN_ALGORITHM",
    );

    // HS256 "signed" with the RSA public key: the classic key-confusion forgery.
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims("u", ISS, AUD).to_string().as_bytes())
    );
    let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &rsa.public_bytes());
    let forged = format!(
        "{input}.{}",
        b64(aws_lc_rs::hmac::sign(&mac_key, input.as_bytes()).as_ref())
    );
    assert_api_error(
        sku(app.client(pk, &forged)).await,
        401,
        "UNSUPPORTED_TOKEN_ALGORITHM",
    );

    // a key the JWKS does not have
    let stranger = Signer::new(Alg::Es256, "who-is-this");
    assert_api_error(
        sku(app.client(pk, &stranger.sign(&claims("u", ISS, AUD)))).await,
        401,
        "UNKNOWN_SIGNING_KEY",
    );
    // a known kid, but signed by someone else
    let impostor = Signer::new(Alg::Es256, "rsa-1");
    let wrong_sig = impostor.sign_with_header(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &claims("u", ISS, AUD),
    );
    assert_api_error(
        sku(app.client(pk, &wrong_sig)).await,
        401,
        "INVALID_TOKEN_SIGNATURE",
    );
    // a tampered payload
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[1] = b64(claims("admin", ISS, AUD).to_string().as_bytes());
    assert_api_error(
        sku(app.client(pk, &parts.join("."))).await,
        401,
        "INVALID_TOKEN_SIGNATURE",
    );

    assert_api_error(
        sku(app.client(pk, &rsa.sign(&claims("u", "https://evil.test", AUD)))).await,
        401,
        "INVALID_TOKEN_ISSUER",
    );
    assert_api_error(
        sku(app.client(pk, &rsa.sign(&claims("u", ISS, "someone-else")))).await,
        401,
        "INVALID_TOKEN_AUDIENCE",
    );
    let no_sub = rsa.sign(&json!({"iss": ISS, "aud": AUD, "exp": t + 600}));
    assert_api_error(
        sku(app.client(pk, &no_sub)).await,
        401,
        "MISSING_TOKEN_CLAIM",
    );

    // the good token still works after all that
    assert!(sku(app.client(pk, &good)).await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn secret_keys_are_accepted_for_the_catalog_only_from_the_same_organisation_and_environment()
{
    let app = spawn_app().await;
    let sku = |c: cobro_sdk::Client| async move { c.get_sku("sku-tl-TEL010", None).await };
    assert!(
        sku(app.client(&app.dev.public_key, &app.dev.secret_key))
            .await
            .is_ok()
    );
    // another dev pair of the same organisation may vouch for this public key, once the
    // snapshot has it (within the refresh interval: 100 ms in tests, 1 s by default)
    let other_dev = app
        .create_key(Environment::Dev, KeyOptions::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sku(app.client(&app.dev.public_key, &other_dev.secret_key))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the other pair's secret is never accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a dev key reading with the prod secret (and the reverse) is refused
    assert_api_error(
        sku(app.client(&app.dev.public_key, &app.prod.secret_key)).await,
        401,
        "INVALID_SECRET_KEY",
    );
    assert_api_error(
        sku(app.client(&app.prod.public_key, &app.dev.secret_key)).await,
        401,
        "INVALID_SECRET_KEY",
    );
    // another organisation's secret is refused
    let other_org = admin::create_org(app.store.as_ref(), "Other")
        .await
        .expect("org");
    let foreign = admin::create_key(
        app.store.as_ref(),
        &other_org.id,
        Environment::Dev,
        &KeyOptions::default(),
    )
    .await
    .expect("key");
    assert_api_error(
        sku(app.client(&app.dev.public_key, &foreign.secret_key)).await,
        401,
        "INVALID_SECRET_KEY",
    );
    assert_api_error(
        sku(app.client(&app.dev.public_key, "sk_dev_madeup")).await,
        401,
        "INVALID_SECRET_KEY",
    );
    // a built-in issuer token is bound to its organisation and environment (audience)
    let dev_token = app.token(&app.dev, "u").await;
    assert!(
        sku(app.client(&app.dev.public_key, &dev_token))
            .await
            .is_ok()
    );
    assert_api_error(
        sku(app.client(&app.prod.public_key, &dev_token)).await,
        401,
        "INVALID_TOKEN_AUDIENCE",
    );
    let foreign_token = app.token(&foreign, "u").await;
    assert_api_error(
        sku(app.client(&app.dev.public_key, &foreign_token)).await,
        401,
        "INVALID_TOKEN_AUDIENCE",
    );
    app.stop().await;
}

#[tokio::test]
async fn endpoints_that_take_only_a_customer_jwt_or_only_the_secret_key_say_so() {
    // No purchase or organisation route exists yet (they come with the purchases issue), so the
    // guards are served on a probe router over real HTTP, with the running server's state.
    let app = spawn_app().await;
    let probe = Router::new()
        .route(
            "/customer",
            get(|CustomerCaller(c): CustomerCaller| async move {
                match c.principal {
                    Principal::Customer { sub } => sub,
                    Principal::SecretKey => "secret".to_string(),
                }
            }),
        )
        .route(
            "/org",
            get(|OrgCaller(c): OrgCaller| async move { c.org_id().to_string() }),
        )
        .with_state(app.app())
        .layer(axum::middleware::from_fn(
            cobro_server::error::render_errors,
        ));
    let base = serve_router(probe).await;
    let token = app.token(&app.dev, "customer-7").await;
    let probe_client = |bearer: &str| {
        cobro_sdk::Client::new(&base)
            .expect("client")
            .with_api_key(&app.dev.public_key)
            .with_bearer(bearer)
    };

    let resp = reqwest::Client::new()
        .get(format!("{base}/customer"))
        .header("x-api-key", &app.dev.public_key)
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(
        resp.text().await.expect("body"),
        "customer-7",
        "the JWT sub is the customer id"
    );

    let secret_on_customer: Result<serde_json::Value, _> = probe_client(&app.dev.secret_key)
        .get("/customer", &[])
        .await;
    match secret_on_customer {
        Err(cobro_sdk::Error::Api {
            status: 401,
            code,
            message,
            ..
        }) => {
            assert_eq!(code, "CUSTOMER_JWT_REQUIRED");
            assert!(message.contains("customer JWT"), "{message}");
        }
        other => panic!("expected CUSTOMER_JWT_REQUIRED, got {other:?}"),
    }
    let jwt_on_org: Result<serde_json::Value, _> = probe_client(&token).get("/org", &[]).await;
    assert!(
        matches!(jwt_on_org, Err(cobro_sdk::Error::Api { status: 401, ref code, .. }) if code == "SECRET_KEY_REQUIRED")
    );
    app.stop().await;
}

#[tokio::test]
async fn keys_created_while_running_work_at_once_and_revoked_keys_stop_within_seconds() {
    let app = spawn_app_with(|c| c.auth.refresh_interval_ms = 1_000).await;
    // created by "another process" (straight into the database) after the server started
    let fresh = app
        .create_key(Environment::Dev, KeyOptions::default())
        .await;
    let client = app.client(&fresh.public_key, &fresh.secret_key);
    assert!(
        client.get_sku("sku-tl-TEL010", None).await.is_ok(),
        "a new key works on its first request"
    );

    admin::revoke_key(app.store.as_ref(), &fresh.public_key)
        .await
        .expect("revoke");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get_sku("sku-tl-TEL010", None).await {
            Err(e) if e.code() == Some("API_KEY_REVOKED") => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("a revoked key must be refused within 10 s, got {other:?}"),
        }
    }
    // the other keys are unaffected
    assert!(
        app.client(&app.dev.public_key, &app.dev.secret_key)
            .get_sku("sku-tl-TEL010", None)
            .await
            .is_ok()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_jwks_but_a_flood_of_them_cannot_hammer_it() {
    let first = Signer::new(Alg::EdDsa, "key-1");
    let (app, jwks, key) = with_external_idp(&[&first]).await;
    let pk = key.public_key.clone();
    let ok = app
        .client(&pk, &first.sign(&claims("u", ISS, AUD)))
        .get_sku("sku-tl-TEL010", None)
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(jwks.hits(), 1);

    // the identity provider rotates in a new key
    let second = Signer::new(Alg::Es256, "key-2");
    jwks.set_keys(vec![first.jwk(), second.jwk()]);
    tokio::time::sleep(Duration::from_millis(350)).await; // past the (test) minimum refresh interval
    let rotated = app
        .client(&pk, &second.sign(&claims("u", ISS, AUD)))
        .get_sku("sku-tl-TEL010", None)
        .await;
    assert!(
        rotated.is_ok(),
        "a token signed with the new key verifies after one refresh: {rotated:?}"
    );
    assert_eq!(jwks.hits(), 2);

    // 40 concurrent tokens with made-up kids: at most one more fetch within the interval
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let token = Signer::new(Alg::EdDsa, &format!("bogus-{i}")).sign(&claims("u", ISS, AUD));
            let client = app.client(&pk, &token);
            tokio::spawn(async move { client.get_sku("sku-tl-TEL010", None).await })
        })
        .collect();
    for t in flood {
        assert_api_error(t.await.expect("task"), 401, "UNKNOWN_SIGNING_KEY");
    }
    assert!(
        jwks.hits() <= 3,
        "JWKS fetched {} times for 40 unknown kids",
        jwks.hits()
    );
    app.stop().await;
}

/// `n` concurrent SKU reads with one key and bearer; the results in order.
async fn burst(
    app: &TestApp,
    key: &str,
    bearer: &str,
    n: usize,
) -> Vec<Result<cobro_types::Sku, cobro_sdk::Error>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = app.client(key, bearer);
            tokio::spawn(async move { client.get_sku("sku-tl-TEL010", None).await })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    results
}

#[tokio::test]
async fn concurrent_first_requests_share_one_slow_jwks_fetch_and_all_succeed() {
    let signer = Signer::new(Alg::EdDsa, "slow-1");
    let (app, jwks, key) = with_external_idp(&[&signer]).await;
    jwks.set_delay_ms(300);
    let token = signer.sign(&claims("u", ISS, AUD));
    for r in burst(&app, &key.public_key, &token, 25).await {
        assert!(
            r.is_ok(),
            "a valid token must not fail while the JWKS is being fetched: {r:?}"
        );
    }
    assert_eq!(jwks.hits(), 1, "one fetch served the whole burst");

    // after a rotation, requests queued behind the refresh reuse its result too
    let rotated = Signer::new(Alg::Es256, "slow-2");
    jwks.set_keys(vec![signer.jwk(), rotated.jwk()]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let token = rotated.sign(&claims("u", ISS, AUD));
    for r in burst(&app, &key.public_key, &token, 25).await {
        assert!(
            r.is_ok(),
            "a token signed by the rotated-in key must verify: {r:?}"
        );
    }
    assert_eq!(jwks.hits(), 2);
    app.stop().await;
}

#[tokio::test]
async fn duplicate_credential_headers_are_refused() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/v1/skus/sku-tl-TEL010", app.url))
        .header("x-api-key", &app.dev.public_key)
        .header("x-api-key", &app.prod.public_key)
        .bearer_auth(&app.dev.secret_key)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http
        .get(format!("{}/v1/skus/sku-tl-TEL010", app.url))
        .header("x-api-key", &app.dev.public_key)
        .header("authorization", format!("Bearer {}", app.dev.secret_key))
        .header("authorization", format!("Bearer {}", app.prod.secret_key))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_jwks_is_a_503_not_a_401() {
    let app = spawn_app().await;
    let key = app
        .create_key(
            Environment::Dev,
            KeyOptions {
                jwks_url: Some("http://127.0.0.1:9/jwks.json".into()),
                issuer: None,
                audience: None,
            },
        )
        .await;
    let token = Signer::new(Alg::EdDsa, "k").sign(&json!({"sub": "u", "exp": now() + 60}));
    assert_api_error(
        app.client(&key.public_key, &token)
            .get_sku("sku-tl-TEL010", None)
            .await,
        503,
        "JWKS_UNAVAILABLE",
    );
    app.stop().await;
}

#[tokio::test]
async fn the_builtin_issuer_jwks_is_served_and_verifies_its_own_tokens_over_http() {
    let app = spawn_app().await;
    // A key that trusts the server's own published JWKS, as an external integrator's would.
    let key = app
        .create_key(
            Environment::Dev,
            KeyOptions {
                jwks_url: Some(format!("{}/.well-known/jwks.json", app.url)),
                issuer: Some("cobro".into()),
                audience: Some(app.org_id.clone()),
            },
        )
        .await;
    let (token, _) = app
        .app()
        .issuer
        .mint("someone", &app.org_id, 60)
        .expect("mint");
    let sku = app
        .client(&key.public_key, &token)
        .get_sku("sku-tl-TEL010", None)
        .await;
    assert!(sku.is_ok(), "{sku:?}");
    app.stop().await;
}
