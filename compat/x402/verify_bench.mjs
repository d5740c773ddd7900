// Same verification loop as the Rust verify_bench, in starknet.js 9.2.1:
// SNIP-12 hash of the Chipi Payment (variant C) + STARK ECDSA verify.
// Run: node verify_bench.mjs [N]
import { typedData, ec } from "starknet";

const N = Number(process.argv[2] ?? 300);
const key = "0x1234567890abcdef";
const pub = ec.starkCurve.getStarkKey(key);
const td = {
  types: {
    StarknetDomain: [
      { name: "name", type: "shortstring" }, { name: "version", type: "shortstring" },
      { name: "chainId", type: "shortstring" }, { name: "revision", type: "shortstring" },
    ],
    Payment: [
      { name: "from_address", type: "ContractAddress" }, { name: "to_address", type: "ContractAddress" },
      { name: "amount", type: "u256" }, { name: "asset", type: "ContractAddress" },
      { name: "valid_until", type: "u128" }, { name: "nonce", type: "felt" },
    ],
  },
  primaryType: "Payment",
  domain: { name: "x402-starknet", version: "1", chainId: "SN_MAIN", revision: "1" },
  message: {
    from_address: "0x1234", to_address: "0x5678", amount: { low: "10000", high: "0" },
    asset: "0x033068F6539f8e6e6b131e6B2B814e6c34A5224bC66947c47DaB9dFeE93b35fb",
    valid_until: "1700000000", nonce: "0x1",
  },
};
const hash = typedData.getMessageHash(td, "0x1234");
const sig = ec.starkCurve.sign(hash, key);
const fullPub = ec.starkCurve.getPublicKey(key, false);
if (!ec.starkCurve.verify(sig, hash, fullPub)) throw new Error("does not verify");

// Interleaved rounds, best of each (as the Rust bench does; the machine is shared).
const rounds = 5;
const per = Math.max(1, Math.floor(N / rounds));
let raw = 0;
let full = 0;
for (let k = 0; k < rounds; k++) {
  let t = process.hrtime.bigint();
  for (let i = 0; i < per; i++) ec.starkCurve.verify(sig, hash, fullPub);
  raw = Math.max(raw, per / (Number(process.hrtime.bigint() - t) / 1e9));
  t = process.hrtime.bigint();
  for (let i = 0; i < per; i++) {
    const h = typedData.getMessageHash(td, "0x1234");
    ec.starkCurve.verify(sig, h, fullPub);
  }
  full = Math.max(full, per / (Number(process.hrtime.bigint() - t) / 1e9));
}
console.log(`starknet.js ECDSA verify:            ${raw.toFixed(0)} /s/core`);
console.log(`starknet.js SNIP-12 hash + verify:   ${full.toFixed(0)} /s/core`);
console.log(`public key ${pub}`);
console.log(JSON.stringify({ raw_verify_per_sec: raw, hash_and_verify_per_sec: full }));
