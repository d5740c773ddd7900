//! SNIP-12 revision 1 (Poseidon) hashing for the two structs x402 on Starknet signs:
//!
//! * Chipi's `Payment` struct (variant C: the standard 4-field `StarknetDomain`; variant B:
//!   the 3-field domain Chipi publishes, hashed with `revision: "1"`), and
//! * SNIP-9 v2 `OutsideExecution` (domain `Account.execute_from_outside`, version `2`).
//!
//! The hashes are computed directly with `starknet-crypto`'s Poseidon; the type hashes are
//! constants whose derivation from the SNIP-12 type strings (`starknet_keccak`) is checked in
//! the tests against `starknet-core`'s typed-data implementation.

use starknet_crypto::{Felt, poseidon_hash_many};

/// `starknet_keccak("\"StarknetDomain\"(\"name\":\"shortstring\",\"version\":\"shortstring\",\"chainId\":\"shortstring\",\"revision\":\"shortstring\")")`
pub const DOMAIN_TYPE_HASH_4: Felt =
    Felt::from_hex_unchecked("0x1ff2f602e42168014d405a94f75e8a93d640751d71d16311266e140d8b0a210");
/// Type hash of the 3-field `StarknetDomain` (name, version, chainId as shortstrings).
pub const DOMAIN_TYPE_HASH_3: Felt =
    Felt::from_hex_unchecked("0x3dd4500e1c37220e27d12bf239882d3d2c05add967b8646c0173182a65cad8b");
/// Type hash of `"Payment"(…)"u256"(…)` (revision 1).
pub const PAYMENT_TYPE_HASH: Felt =
    Felt::from_hex_unchecked("0x1cc9e3c2fb453a95d02eb072694d2affb6f2cb6b4f69181073302376a93e562");
/// Type hash of the SNIP-12 preset `u256` struct.
pub const U256_TYPE_HASH: Felt =
    Felt::from_hex_unchecked("0x3b143be38b811560b45593fb2a071ec4ddd0a020e10782be62ffe6f39e0e82c");
/// Type hash of SNIP-9 v2 `OutsideExecution` (revision 1).
pub const OUTSIDE_EXECUTION_TYPE_HASH: Felt =
    Felt::from_hex_unchecked("0x312b56c05a7965066ddbda31c016d8d05afc305071c0ca3cdc2192c3c2f1f0f");
/// Type hash of SNIP-9 v2 `Call` (revision 1).
pub const CALL_TYPE_HASH: Felt =
    Felt::from_hex_unchecked("0x3635c7f2a7ba93844c0d064e18e487f35ab90f7c39d00f186a781fc3f0c2ca9");

/// `selector!("transfer")`.
pub const SELECTOR_TRANSFER: Felt =
    Felt::from_hex_unchecked("0x83afd3f4caedc6eebf44246fe54e38c95e3179a5ec9ea81740eca5b482d12e");
/// `selector!("transfer_from")`.
pub const SELECTOR_TRANSFER_FROM: Felt =
    Felt::from_hex_unchecked("0x3704ffe8fba161be0e994951751a5033b1462b918ff785c0a636be718dfdb68");
/// `selector!("execute_from_outside_v2")`.
pub const SELECTOR_EXECUTE_FROM_OUTSIDE_V2: Felt =
    Felt::from_hex_unchecked("0x34cc13b274446654ca3233ed2c1620d4c5d1d32fd20b47146a3371064bdc57d");
/// `selector!("is_valid_signature")`.
pub const SELECTOR_IS_VALID_SIGNATURE: Felt =
    Felt::from_hex_unchecked("0x28420862938116cb3bbdbedee07451ccc54d4e9412dbef71142ad1980a30941");
/// `selector!("get_public_key")`.
pub const SELECTOR_GET_PUBLIC_KEY: Felt =
    Felt::from_hex_unchecked("0x1a35984e05126dbecb7c3bb9929e7dd9106d460c59b1633739a5c733a5fb13b");
/// `selector!("Transfer")`, the ERC-20 transfer event key.
pub const SELECTOR_TRANSFER_EVENT: Felt =
    Felt::from_hex_unchecked("0x99cd8bde557814842a3121e8ddfd433a539b8c9f14bf31ebf108d12e6196e9");
/// The SNIP-9 caller value meaning "anyone may submit": shortstring `ANY_CALLER`.
pub const ANY_CALLER: Felt = Felt::from_hex_unchecked("0x414e595f43414c4c4552");
/// `is_valid_signature` success value: shortstring `VALID`.
pub const VALID: Felt = Felt::from_hex_unchecked("0x56414c4944");

/// Encodes an ASCII string of at most 31 bytes as a Cairo short string.
/// Returns `None` when the string is longer or not ASCII.
pub fn short_string(s: &str) -> Option<Felt> {
    if s.len() > 31 || !s.is_ascii() {
        return None;
    }
    Some(Felt::from_bytes_be_slice(s.as_bytes()))
}

fn ss(s: &'static str) -> Felt {
    // Only called with short ASCII literals; fall back to zero rather than panic.
    short_string(s).unwrap_or(Felt::ZERO)
}

/// Parses a felt from a `0x` hex string or a decimal string (values ≥ the field prime are
/// rejected). A canonical 8-4-4-4-12 UUID is mapped to `0x` + its 32 hex digits.
pub fn parse_felt(s: &str) -> Option<Felt> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return parse_hex_checked(hex);
    }
    if s.len() == 36 && s.as_bytes().get(8) == Some(&b'-') {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return parse_hex_checked(&hex);
        }
        return None;
    }
    if s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let f = Felt::from_dec_str(s).ok()?;
    // Reject values ≥ p (the parser may reduce them).
    (f.to_string() == trim_zeros(s)).then_some(f)
}

fn trim_zeros(s: &str) -> &str {
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0" } else { t }
}

fn parse_hex_checked(hex: &str) -> Option<Felt> {
    let f = Felt::from_hex(hex).ok()?;
    (format!("{f:x}") == trim_zeros(&hex.to_ascii_lowercase())).then_some(f)
}

/// Canonical text form of a felt used as a store key and on the wire: `0x` + lowercase hex,
/// no leading zeros.
pub fn felt_hex(f: &Felt) -> String {
    format!("{f:#x}")
}

/// Starknet chain id for a network name (`SN_MAIN`, `SN_SEPOLIA`).
pub fn chain_id(network: &str) -> Option<Felt> {
    match network {
        "SN_MAIN" | "SN_SEPOLIA" => short_string(network),
        _ => None,
    }
}

/// Which `StarknetDomain` shape a Chipi `Payment` signature was made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainVariant {
    /// The 3-field domain as Chipi publishes it, hashed with revision 1.
    B,
    /// The standard 4-field revision 1 domain (what this crate signs).
    C,
}

/// The Chipi `Payment` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMessage {
    /// Payer account (also the SNIP-12 account of the message hash).
    pub from_address: Felt,
    /// Recipient.
    pub to_address: Felt,
    /// Amount in base units (u256 low/high).
    pub amount_low: u128,
    /// High 128 bits of the amount.
    pub amount_high: u128,
    /// ERC-20 contract.
    pub asset: Felt,
    /// Unix seconds after which the payment is void.
    pub valid_until: u128,
    /// Replay nonce (a felt).
    pub nonce: Felt,
}

/// Note: SNIP-12 encodes a `shortstring` that reads as a number (`"1"`, `"2"`) as that
/// number, so `version: "1"` and `revision: "1"` hash as the felt 1, not as `'1'` (0x31).
fn domain_hash(variant: DomainVariant, name: Felt, version: Felt, chain: Felt) -> Felt {
    match variant {
        DomainVariant::C => {
            poseidon_hash_many(&[DOMAIN_TYPE_HASH_4, name, version, chain, Felt::ONE])
        }
        DomainVariant::B => poseidon_hash_many(&[DOMAIN_TYPE_HASH_3, name, version, chain]),
    }
}

/// SNIP-12 message hash of a Chipi `Payment` (domain `x402-starknet`, version `1`).
pub fn payment_message_hash(msg: &PaymentMessage, chain_id: Felt, variant: DomainVariant) -> Felt {
    payment_hash_with_domain(msg, payment_domain_hash(chain_id, variant))
}

/// Domain hash of the Chipi `Payment` typed data (constant per chain and variant).
pub fn payment_domain_hash(chain_id: Felt, variant: DomainVariant) -> Felt {
    domain_hash(variant, ss("x402-starknet"), Felt::ONE, chain_id)
}

/// [`payment_message_hash`] with a precomputed [`payment_domain_hash`].
pub fn payment_hash_with_domain(msg: &PaymentMessage, domain: Felt) -> Felt {
    let amount = poseidon_hash_many(&[
        U256_TYPE_HASH,
        Felt::from(msg.amount_low),
        Felt::from(msg.amount_high),
    ]);
    let st = poseidon_hash_many(&[
        PAYMENT_TYPE_HASH,
        msg.from_address,
        msg.to_address,
        amount,
        msg.asset,
        Felt::from(msg.valid_until),
        msg.nonce,
    ]);
    poseidon_hash_many(&[ss("StarkNet Message"), domain, msg.from_address, st])
}

/// One call of an `OutsideExecution`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Contract called.
    pub to: Felt,
    /// Entry point selector.
    pub selector: Felt,
    /// Calldata.
    pub calldata: Vec<Felt>,
}

/// SNIP-9 v2 `OutsideExecution`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideExecution {
    /// Who may submit it (`ANY_CALLER` or a specific relayer).
    pub caller: Felt,
    /// Account-level nonce (SNIP-9 nonces are unordered).
    pub nonce: Felt,
    /// Valid strictly after this unix time.
    pub execute_after: u64,
    /// Valid strictly before this unix time.
    pub execute_before: u64,
    /// Calls executed by the account.
    pub calls: Vec<Call>,
}

impl OutsideExecution {
    /// Cairo serialisation of the struct (as `execute_from_outside_v2` calldata expects).
    pub fn to_calldata(&self) -> Vec<Felt> {
        let mut out = vec![
            self.caller,
            self.nonce,
            Felt::from(self.execute_after),
            Felt::from(self.execute_before),
            Felt::from(self.calls.len()),
        ];
        for c in &self.calls {
            out.push(c.to);
            out.push(c.selector);
            out.push(Felt::from(c.calldata.len()));
            out.extend_from_slice(&c.calldata);
        }
        out
    }
}

/// SNIP-12 revision 1 message hash of a SNIP-9 v2 `OutsideExecution` signed by `account`.
pub fn outside_execution_hash(oe: &OutsideExecution, account: Felt, chain_id: Felt) -> Felt {
    outside_execution_hash_with_domain(oe, account, outside_execution_domain_hash(chain_id))
}

/// Domain hash of SNIP-9 v2 typed data (constant per chain).
pub fn outside_execution_domain_hash(chain_id: Felt) -> Felt {
    domain_hash(
        DomainVariant::C,
        ss("Account.execute_from_outside"),
        Felt::TWO,
        chain_id,
    )
}

/// [`outside_execution_hash`] with a precomputed [`outside_execution_domain_hash`].
pub fn outside_execution_hash_with_domain(
    oe: &OutsideExecution,
    account: Felt,
    domain: Felt,
) -> Felt {
    let call_hashes: Vec<Felt> = oe
        .calls
        .iter()
        .map(|c| {
            poseidon_hash_many(&[
                CALL_TYPE_HASH,
                c.to,
                c.selector,
                poseidon_hash_many(&c.calldata),
            ])
        })
        .collect();
    let st = poseidon_hash_many(&[
        OUTSIDE_EXECUTION_TYPE_HASH,
        oe.caller,
        oe.nonce,
        Felt::from(oe.execute_after),
        Felt::from(oe.execute_before),
        poseidon_hash_many(&call_hashes),
    ]);
    poseidon_hash_many(&[ss("StarkNet Message"), domain, account, st])
}

/// Signs a message hash with RFC 6979 deterministic `k`. Returns `(r, s)`.
pub fn sign_hash(private_key: &Felt, hash: &Felt) -> Option<(Felt, Felt)> {
    let mut seed = None;
    for i in 0u64..8 {
        let k = starknet_crypto::rfc6979_generate_k(hash, private_key, seed.as_ref());
        if let Ok(sig) = starknet_crypto::sign(private_key, hash, &k) {
            return Some((sig.r, sig.s));
        }
        seed = Some(Felt::from(i + 1));
    }
    None
}

/// Verifies a STARK ECDSA signature; any error counts as invalid.
pub fn verify_hash(public_key: &Felt, hash: &Felt, r: &Felt, s: &Felt) -> bool {
    starknet_crypto::verify(public_key, hash, r, s).unwrap_or(false)
}

/// Public key of a private key.
pub fn public_key(private_key: &Felt) -> Felt {
    starknet_crypto::get_public_key(private_key)
}
