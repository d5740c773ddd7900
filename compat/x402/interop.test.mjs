// Interop between cobro-x402 and starknet.js 9.2.1 / @chipi-stack/core 0.3.1.
// Needs the Rust helper built first:
//   cargo build --release -p cobro-x402 --example interop
// Run: cd compat/node && npm install && node --test
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { typedData, ec, hash } from "starknet";
import { X402Client } from "@chipi-stack/core";

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = process.env.INTEROP_BIN ?? path.join(here, "../../target/release/examples/interop");
const KEY = "0x1234567890abcdef";
const ACCOUNT = "0x1234";
const PAY_TO = "0x5678";
const USDC = "0x033068F6539f8e6e6b131e6B2B814e6c34A5224bC66947c47DaB9dFeE93b35fb";
const FULL_PUB = ec.starkCurve.getPublicKey(KEY, false);

const ss = (n) => ({ name: n, type: "shortstring" });
const PAYMENT_TYPES = [
  { name: "from_address", type: "ContractAddress" }, { name: "to_address", type: "ContractAddress" },
  { name: "amount", type: "u256" }, { name: "asset", type: "ContractAddress" },
  { name: "valid_until", type: "u128" }, { name: "nonce", type: "felt" },
];
const uuidToFelt = (n) => (/^[0-9a-f]{8}-/i.test(n) ? "0x" + n.replaceAll("-", "") : n);

function paymentTypedData(msg, variant = "C") {
  const domainTypes = variant === "C"
    ? [ss("name"), ss("version"), ss("chainId"), ss("revision")]
    : [ss("name"), ss("version"), ss("chainId")];
  return {
    types: { StarknetDomain: domainTypes, Payment: PAYMENT_TYPES },
    primaryType: "Payment",
    domain: { name: "x402-starknet", version: "1", chainId: "SN_MAIN", revision: "1" },
    message: msg,
  };
}

function oeTypedData(oe) {
  return {
    types: {
      StarknetDomain: [ss("name"), ss("version"), ss("chainId"), ss("revision")],
      OutsideExecution: [
        { name: "Caller", type: "ContractAddress" }, { name: "Nonce", type: "felt" },
        { name: "Execute After", type: "u128" }, { name: "Execute Before", type: "u128" },
        { name: "Calls", type: "Call*" },
      ],
      Call: [{ name: "To", type: "ContractAddress" }, { name: "Selector", type: "selector" }, { name: "Calldata", type: "felt*" }],
    },
    primaryType: "OutsideExecution",
    domain: { name: "Account.execute_from_outside", version: "2", chainId: "SN_MAIN", revision: "1" },
    message: {
      Caller: oe.caller, Nonce: oe.nonce, "Execute After": String(oe.executeAfter), "Execute Before": String(oe.executeBefore),
      Calls: oe.calls.map((c) => ({ To: c.to, Selector: c.selector, Calldata: c.calldata })),
    },
  };
}

let server;
let base;

before(async () => {
  server = spawn(BIN, ["serve", "before"], { stdio: ["ignore", "pipe", "inherit"] });
  base = await new Promise((resolve, reject) => {
    let buf = "";
    server.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/LISTENING (\S+)/);
      if (m) resolve(m[1]);
    });
    server.on("exit", (c) => reject(new Error(`interop server exited ${c}`)));
  });
});

after(() => server?.kill());

function chipiPayload(variant) {
  const nonce = "0x" + [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
  const validUntil = Math.floor(Date.now() / 1000) + 120;
  const msg = {
    from_address: ACCOUNT, to_address: PAY_TO, amount: { low: "10000", high: "0" },
    asset: USDC, valid_until: String(validUntil), nonce,
  };
  const h = typedData.getMessageHash(paymentTypedData(msg, variant), ACCOUNT);
  const sig = ec.starkCurve.sign(h, KEY);
  return {
    x402Version: 1, scheme: "exact", network: "starknet-mainnet",
    payload: {
      signature: { r: sig.r.toString(), s: "0x" + sig.s.toString(16) },
      fromAddress: ACCOUNT, toAddress: PAY_TO, amount: "10000", asset: USDC, validUntil, nonce,
    },
  };
}

const requirements = {
  scheme: "exact", network: "starknet-mainnet", maxAmountRequired: "10000", resource: "http://x/paid",
  payTo: PAY_TO, maxTimeoutSeconds: 300, asset: USDC,
};

async function post(p, body) {
  const r = await fetch(base + p, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return r.json();
}

for (const variant of ["C", "B"]) {
  test(`starknet.js variant ${variant} payment: facilitator verifies and settles once`, async () => {
    const body = { x402Version: 1, paymentPayload: chipiPayload(variant), paymentRequirements: requirements };
    const v = await post("/x402/verify", body);
    assert.equal(v.isValid, true, JSON.stringify(v));
    assert.equal(v.payer, ACCOUNT);
    const s = await post("/x402/settle", body);
    assert.equal(s.success, true, JSON.stringify(s));
    const again = await post("/x402/settle", body);
    assert.equal(again.errorReason, "duplicate_settlement");
    assert.equal(again.transaction, s.transaction);
  });
}

test("a starknet.js signature over other data is refused", async () => {
  const p = chipiPayload("C");
  p.payload.amount = "10001";
  const v = await post("/x402/verify", { x402Version: 1, paymentPayload: p, paymentRequirements: requirements });
  assert.equal(v.isValid, false);
  assert.equal(v.invalidReason, "invalid_signature");
});

test("signatures made by the Rust client verify in starknet.js (all dialects)", () => {
  const out = JSON.parse(execFileSync(BIN, ["headers"], { encoding: "utf8" }));
  for (const d of ["ChipiV1", "X402V1"]) {
    const raw = out[d].value;
    const p = JSON.parse(raw.startsWith("{") ? raw : Buffer.from(raw, "base64").toString());
    const q = p.payload;
    const msg = {
      from_address: q.fromAddress, to_address: q.toAddress, amount: { low: q.amount, high: "0" },
      asset: q.asset, valid_until: String(q.validUntil), nonce: q.nonce,
    };
    const h = typedData.getMessageHash(paymentTypedData(msg, "C"), q.fromAddress);
    const sig = new ec.starkCurve.Signature(BigInt(q.signature.r), BigInt(q.signature.s));
    assert.ok(ec.starkCurve.verify(sig, h, FULL_PUB), d);
  }
  const v2 = JSON.parse(Buffer.from(out.X402V2.value, "base64").toString());
  assert.equal(out.X402V2.name, "payment-signature");
  assert.equal(v2.accepted.network, "starknet:SN_MAIN");
  const oe = v2.payload.outsideExecution;
  assert.equal(oe.calls.length, 1);
  assert.equal(BigInt(oe.calls[0].selector), BigInt(hash.getSelectorFromName("transfer")));
  const h = typedData.getMessageHash(oeTypedData(oe), v2.payload.from);
  const [r, s] = v2.payload.signature;
  assert.ok(ec.starkCurve.verify(new ec.starkCurve.Signature(BigInt(r), BigInt(s)), h, FULL_PUB));
});

test("Chipi's X402Client reads our 402 and its payment passes our middleware", async () => {
  // Chipi's published typed data cannot be hashed as is (3-field domain without revision,
  // UUID nonce): the account adds revision "1" (variant B) and maps the UUID to a felt,
  // which is exactly what the facilitator accepts.
  const account = {
    address: ACCOUNT,
    async signMessage(td) {
      const fixed = { ...td, domain: { ...td.domain, revision: "1" }, message: { ...td.message, nonce: uuidToFelt(td.message.nonce) } };
      const h = typedData.getMessageHash(fixed, ACCOUNT);
      const sig = ec.starkCurve.sign(h, KEY);
      return [sig.r.toString(), sig.s.toString()];
    },
  };
  const client = new X402Client(account, { maxPaymentAmount: "1", allowedRecipients: [PAY_TO] });
  const r = await client.fetch(base + "/paid");
  const text = await r.text();
  assert.equal(r.status, 200, text);
  assert.equal(JSON.parse(text).payer, ACCOUNT);
  assert.ok(r.headers.get("x-payment-response"));
  // The same client refuses a price above its maximum.
  const cheap = new X402Client(account, { maxPaymentAmount: "0.001" });
  await assert.rejects(cheap.fetch(base + "/paid"), /exceeds maximum/);
});

test("the Rust client pays the Rust middleware (v2 preferred)", () => {
  const out = JSON.parse(execFileSync(BIN, ["pay", base + "/paid"], { encoding: "utf8" }));
  assert.equal(out.status, 200);
  assert.equal(out.paidWith, "x402_v2");
  assert.equal(out.settlement.success, true);
});
