//! Spec conformance vectors, type hashes cross-checked against starknet-core, and property
//! tests of signing and tampering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use cobro_x402::Felt;
use cobro_x402::typed_data::*;
use proptest::prelude::*;

const ASSET: &str = "0x033068F6539f8e6e6b131e6B2B814e6c34A5224bC66947c47DaB9dFeE93b35fb";

fn f(s: &str) -> Felt {
    parse_felt(s).unwrap()
}

fn msg(nonce: &str) -> PaymentMessage {
    PaymentMessage {
        from_address: f("0x1234"),
        to_address: f("0x5678"),
        amount_low: 10000,
        amount_high: 0,
        asset: f(ASSET),
        valid_until: 1_700_000_000,
        nonce: f(nonce),
    }
}

fn main_chain() -> Felt {
    chain_id("SN_MAIN").unwrap()
}

#[test]
fn spec_message_hash_vectors() {
    let cases = [
        (
            DomainVariant::B,
            "0x1",
            "0x3381b8a65d8cbb61b8a4dc1ab283e025247223c474d341bec6d0cc2138ae408",
        ),
        (
            DomainVariant::B,
            "0x550e8400e29b41d4a716446655440000",
            "0x21a458c53bfce548c9b7449aa58218110b774d9d6f223d416b43b8cbdcd312b",
        ),
        (
            DomainVariant::C,
            "0x1",
            "0x6a502a96c67e0a2a8045aaf0cb37ac052c15581c2bb491f89b6e271b0f44c2b",
        ),
        (
            DomainVariant::C,
            "0x550e8400e29b41d4a716446655440000",
            "0x65d1e5399c97f0553aa7e6c0e972f2f231fdbf34c06e6e30c0729e1712a4c1d",
        ),
    ];
    for (variant, nonce, want) in cases {
        assert_eq!(
            payment_message_hash(&msg(nonce), main_chain(), variant),
            f(want),
            "{variant:?} {nonce}"
        );
    }
}

#[test]
fn uuid_nonce_maps_to_128_bit_felt() {
    assert_eq!(
        f("550e8400-e29b-41d4-a716-446655440000"),
        f("0x550e8400e29b41d4a716446655440000")
    );
    assert_eq!(f("255"), f("0xff"));
    // ≥ p is refused, not reduced.
    assert!(
        parse_felt("0x800000000000011000000000000000000000000000000000000000000000001").is_none()
    );
    assert!(
        parse_felt("3618502788666131213697322783095070105623107215331596699973092056135872020481")
            .is_none()
    );
    assert!(parse_felt("not-a-felt").is_none());
    assert!(parse_felt("").is_none());
}

#[test]
fn spec_signature_vector_rfc6979() {
    let key = f("0x1234567890abcdef");
    assert_eq!(
        public_key(&key),
        f("0x2abbefdcbf731195ee2acd186441eb536e86f888327b3655cffbd07b57dbf26")
    );
    let h = payment_message_hash(&msg("0x1"), main_chain(), DomainVariant::C);
    let (r, s) = sign_hash(&key, &h).unwrap();
    assert_eq!(
        r,
        f("0x60d911d34984c7d134a38ba9da8d87e065a107690d5f5d57fd4b95ced4ade7e")
    );
    assert_eq!(
        s,
        f("0x27a7e86f3bc984b3cd1046ce95de42e71d67b0a8102024fa3068d938e9e0383")
    );
    assert!(verify_hash(&public_key(&key), &h, &r, &s));
}

#[test]
fn constants_match_starknet_keccak() {
    use starknet_core::utils::{get_selector_from_name, starknet_keccak};
    let tk = |s: &str| starknet_keccak(s.as_bytes());
    assert_eq!(
        DOMAIN_TYPE_HASH_4,
        tk(
            r#""StarknetDomain"("name":"shortstring","version":"shortstring","chainId":"shortstring","revision":"shortstring")"#
        )
    );
    assert_eq!(
        DOMAIN_TYPE_HASH_3,
        tk(
            r#""StarknetDomain"("name":"shortstring","version":"shortstring","chainId":"shortstring")"#
        )
    );
    assert_eq!(
        PAYMENT_TYPE_HASH,
        tk(
            r#""Payment"("from_address":"ContractAddress","to_address":"ContractAddress","amount":"u256","asset":"ContractAddress","valid_until":"u128","nonce":"felt")"u256"("low":"u128","high":"u128")"#
        )
    );
    assert_eq!(U256_TYPE_HASH, tk(r#""u256"("low":"u128","high":"u128")"#));
    assert_eq!(
        OUTSIDE_EXECUTION_TYPE_HASH,
        tk(
            r#""OutsideExecution"("Caller":"ContractAddress","Nonce":"felt","Execute After":"u128","Execute Before":"u128","Calls":"Call*")"Call"("To":"ContractAddress","Selector":"selector","Calldata":"felt*")"#
        )
    );
    assert_eq!(
        CALL_TYPE_HASH,
        tk(r#""Call"("To":"ContractAddress","Selector":"selector","Calldata":"felt*")"#)
    );
    for (c, name) in [
        (SELECTOR_TRANSFER, "transfer"),
        (SELECTOR_TRANSFER_FROM, "transfer_from"),
        (SELECTOR_EXECUTE_FROM_OUTSIDE_V2, "execute_from_outside_v2"),
        (SELECTOR_IS_VALID_SIGNATURE, "is_valid_signature"),
        (SELECTOR_GET_PUBLIC_KEY, "get_public_key"),
        (SELECTOR_TRANSFER_EVENT, "Transfer"),
    ] {
        assert_eq!(c, get_selector_from_name(name).unwrap(), "{name}");
    }
    assert_eq!(ANY_CALLER, short_string("ANY_CALLER").unwrap());
    assert_eq!(VALID, short_string("VALID").unwrap());
}

fn payment_typed_data(nonce: &str) -> serde_json::Value {
    serde_json::json!({
        "types": {
            "StarknetDomain": [
                {"name": "name", "type": "shortstring"}, {"name": "version", "type": "shortstring"},
                {"name": "chainId", "type": "shortstring"}, {"name": "revision", "type": "shortstring"}],
            "Payment": [
                {"name": "from_address", "type": "ContractAddress"}, {"name": "to_address", "type": "ContractAddress"},
                {"name": "amount", "type": "u256"}, {"name": "asset", "type": "ContractAddress"},
                {"name": "valid_until", "type": "u128"}, {"name": "nonce", "type": "felt"}]
        },
        "primaryType": "Payment",
        "domain": {"name": "x402-starknet", "version": "1", "chainId": "SN_MAIN", "revision": "1"},
        "message": {"from_address": "0x1234", "to_address": "0x5678", "amount": {"low": "10000", "high": "0"},
                    "asset": ASSET, "valid_until": "1700000000", "nonce": nonce}
    })
}

#[test]
fn variant_c_agrees_with_starknet_core_typed_data() {
    for nonce in ["0x1", "0x550e8400e29b41d4a716446655440000"] {
        let td: starknet_core::types::TypedData =
            serde_json::from_value(payment_typed_data(nonce)).unwrap();
        let want = td.message_hash(f("0x1234")).unwrap();
        assert_eq!(
            payment_message_hash(&msg(nonce), main_chain(), DomainVariant::C),
            want
        );
    }
}

fn sample_oe(nonce: Felt, pay_to: Felt, amount: u128) -> OutsideExecution {
    OutsideExecution {
        caller: ANY_CALLER,
        nonce,
        execute_after: 0,
        execute_before: 1_700_000_000,
        calls: vec![Call {
            to: f(ASSET),
            selector: SELECTOR_TRANSFER,
            calldata: vec![pay_to, Felt::from(amount), Felt::ZERO],
        }],
    }
}

#[test]
fn outside_execution_vector_and_starknet_core() {
    // Vector computed with starknet.js 9.2.1 (typedData.getMessageHash), account 0x1234.
    let oe = sample_oe(f("0x1"), f("0x5678"), 10000);
    let h = outside_execution_hash(&oe, f("0x1234"), main_chain());
    assert_eq!(
        h,
        f("0xe9e4facb109f47e43a11669a9d5981de93b10e14ff9d8c8b65ec6a19d51fb8")
    );
    let td = serde_json::json!({
        "types": {
            "StarknetDomain": [
                {"name": "name", "type": "shortstring"}, {"name": "version", "type": "shortstring"},
                {"name": "chainId", "type": "shortstring"}, {"name": "revision", "type": "shortstring"}],
            "OutsideExecution": [
                {"name": "Caller", "type": "ContractAddress"}, {"name": "Nonce", "type": "felt"},
                {"name": "Execute After", "type": "u128"}, {"name": "Execute Before", "type": "u128"},
                {"name": "Calls", "type": "Call*"}],
            "Call": [{"name": "To", "type": "ContractAddress"}, {"name": "Selector", "type": "selector"},
                     {"name": "Calldata", "type": "felt*"}]
        },
        "primaryType": "OutsideExecution",
        "domain": {"name": "Account.execute_from_outside", "version": "2", "chainId": "SN_MAIN", "revision": "1"},
        "message": {"Caller": "0x414e595f43414c4c4552", "Nonce": "0x1", "Execute After": "0x0",
                    "Execute Before": "1700000000",
                    "Calls": [{"To": ASSET, "Selector": "transfer", "Calldata": ["0x5678", "10000", "0"]}]}
    });
    let td: starknet_core::types::TypedData = serde_json::from_value(td).unwrap();
    assert_eq!(td.message_hash(f("0x1234")).unwrap(), h);
}

fn felt_strategy() -> impl Strategy<Value = Felt> {
    any::<[u8; 31]>().prop_map(|b| Felt::from_bytes_be_slice(&b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn payment_sign_verify_and_tamper(
        key in felt_strategy().prop_filter("nonzero", |k| *k != Felt::ZERO),
        from in felt_strategy(), to in felt_strategy(), asset in felt_strategy(), nonce in felt_strategy(),
        amount in any::<u64>(), valid_until in any::<u32>(), field in 0usize..7, delta in 1u64..1000,
    ) {
        let m = PaymentMessage {
            from_address: from, to_address: to, amount_low: u128::from(amount), amount_high: 0,
            asset, valid_until: u128::from(valid_until), nonce,
        };
        let h = payment_message_hash(&m, main_chain(), DomainVariant::C);
        let (r, s) = sign_hash(&key, &h).unwrap();
        let pk = public_key(&key);
        prop_assert!(verify_hash(&pk, &h, &r, &s));
        let d = Felt::from(delta);
        let mut t = m.clone();
        match field {
            0 => t.from_address += d,
            1 => t.to_address += d,
            2 => t.amount_low += u128::from(delta),
            3 => t.asset += d,
            4 => t.valid_until += u128::from(delta),
            5 => t.nonce += d,
            _ => t.amount_high += 1,
        }
        let th = payment_message_hash(&t, main_chain(), DomainVariant::C);
        prop_assert!(!verify_hash(&pk, &th, &r, &s));
        // Other chain and the other domain variant do not verify either.
        prop_assert!(!verify_hash(&pk, &payment_message_hash(&m, chain_id("SN_SEPOLIA").unwrap(), DomainVariant::C), &r, &s));
        prop_assert!(!verify_hash(&pk, &payment_message_hash(&m, main_chain(), DomainVariant::B), &r, &s));
    }

    #[test]
    fn outside_execution_sign_verify_and_tamper(
        key in felt_strategy().prop_filter("nonzero", |k| *k != Felt::ZERO),
        account in felt_strategy(), nonce in felt_strategy(), pay_to in felt_strategy(),
        amount in any::<u64>(), field in 0usize..6, delta in 1u64..1000,
    ) {
        let oe = sample_oe(nonce, pay_to, u128::from(amount));
        let h = outside_execution_hash(&oe, account, main_chain());
        let (r, s) = sign_hash(&key, &h).unwrap();
        let pk = public_key(&key);
        prop_assert!(verify_hash(&pk, &h, &r, &s));
        let d = Felt::from(delta);
        let mut t = oe.clone();
        let mut acct = account;
        match field {
            0 => t.caller += d,
            1 => t.nonce += d,
            2 => t.execute_before += delta,
            3 => t.calls[0].calldata[0] += d,
            4 => t.calls[0].calldata[1] += d,
            _ => acct += d,
        }
        prop_assert!(!verify_hash(&pk, &outside_execution_hash(&t, acct, main_chain()), &r, &s));
    }
}
