// Chipi's own x402Middleware (from @chipi-stack/backend 14.13.0), in verify-only mode with
// Chipi's X402Facilitator as published, accepts a payment made by cobro's Rust client (the
// Chipi v1 dialect: a raw-JSON X-PAYMENT header). INTEROP_BIN is cobro-x402's interop example.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { loadBackend } from "./sdk.mjs";

const BIN = process.env.INTEROP_BIN;

function response() {
  return {
    code: 200,
    headers: {},
    body: undefined,
    status(c) { this.code = c; return this; },
    set(k, v) { this.headers[k] = v; return this; },
    json(b) { this.body = b; return this; },
  };
}

test("Chipi's x402Middleware (verify-only) accepts a payment made by cobro's client", { skip: !BIN && "INTEROP_BIN not set" }, async () => {
  const { x402Middleware, X402Facilitator, ChipiClient } = await loadBackend();
  const out = JSON.parse(execFileSync(BIN, ["headers"], { encoding: "utf8" }));
  const header = out.ChipiV1.value;
  assert.ok(header.startsWith("{"), "the Chipi dialect sends raw JSON");

  const facilitator = new X402Facilitator(new ChipiClient({ apiPublicKey: process.env.CHIPI_PUBLIC_KEY ?? "pk_dev_compat" }), "unused");
  const mw = x402Middleware({ facilitator, paymentConfig: { amount: "0.01", payTo: "0x5678" }, verifyOnly: true });

  // Without a payment: Chipi's 402 names the same requirement cobro's client pays.
  const unpaid = response();
  await mw({ method: "GET", headers: {}, url: "/paid" }, unpaid, () => assert.fail("served unpaid"));
  assert.equal(unpaid.code, 402);
  assert.equal(JSON.parse(unpaid.headers["Payment-Required"]).maxAmountRequired, "10000");

  // With cobro's payment: next() runs and the payment is on the request.
  const req = { method: "GET", headers: { "x-payment": header }, url: "/paid" };
  const res = response();
  let served = false;
  await mw(req, res, () => { served = true; });
  assert.ok(served, `refused: ${res.code} ${JSON.stringify(res.body)}`);
  assert.equal(req.x402.payment.payload.toAddress, "0x5678");
  assert.equal(BigInt(req.x402.payment.payload.fromAddress), 0x1234n);
});
