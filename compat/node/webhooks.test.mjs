// Webhook deliveries from cobro, checked by the official Standard Webhooks library
// (npm `standardwebhooks`), by `chipi-signature` as Chipi's docs describe it (hex HMAC-SHA256
// of the raw body with the secret), and by the PyPI `standardwebhooks` package (through
// compat/python/verify_webhook.py, when COBRO_COMPAT_PYTHON names an interpreter that has it).
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import crypto from "node:crypto";
import { execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Webhook } from "standardwebhooks";

const here = path.dirname(fileURLToPath(import.meta.url));
const { COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY, CHIPI_JWT } = process.env;

async function api(method, p, body, bearer = CHIPI_SECRET_KEY) {
  const resp = await fetch(`${COBRO_URL}${p}`, {
    method,
    headers: { "x-api-key": CHIPI_PUBLIC_KEY, authorization: `Bearer ${bearer}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

function receiver() {
  const got = [];
  let notify = () => {};
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      got.push({ headers: req.headers, raw: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(200).end("ok");
      notify();
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const url = `http://127.0.0.1:${server.address().port}/hook`;
      const wait = (n, ms = 15000) =>
        new Promise((ok, fail) => {
          const t = setTimeout(() => fail(new Error(`only ${got.length} of ${n} deliveries`)), ms);
          const check = () => { if (got.length >= n) { clearTimeout(t); ok(got); } };
          notify = check;
          check();
        });
      resolve({ url, got, wait, close: () => server.close() });
    });
  });
}

test("deliveries verify with standardwebhooks (npm, PyPI) and chipi-signature", async () => {
  const rx = await receiver();
  try {
    const created = await api("POST", "/v1/webhook-endpoints", { url: rx.url, events: ["sku-purchase.completed"] });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const secret = created.body.secret;
    assert.match(secret, /^whsec_/);

    const purchase = await api("POST", "/v1/sku-purchases", {
      transactionHash: `compat-webhook-${Date.now()}`, skuId: "sku-tl-TEL010", skuReference: "5512345678",
      currencyAmount: 10, chain: "STARKNET", token: "USDC", walletAddress: "0x0",
    }, CHIPI_JWT);
    assert.equal(purchase.status, 201, JSON.stringify(purchase.body));

    const [delivery] = await rx.wait(1);
    const wh = new Webhook(secret);
    const payload = wh.verify(delivery.raw, delivery.headers);
    assert.equal(payload.type, "sku-purchase.completed");
    assert.equal(payload.data.id, purchase.body.id);
    assert.equal(payload.id, delivery.headers["webhook-id"]);

    const hex = crypto.createHmac("sha256", secret).update(delivery.raw).digest("hex");
    assert.equal(delivery.headers["chipi-signature"], hex);

    // Forgeries are refused by the official library.
    assert.throws(() => wh.verify(delivery.raw.replace("SUCCESS", "FAILED"), delivery.headers));
    assert.throws(() => new Webhook("whsec_" + Buffer.from("another secret key!").toString("base64")).verify(delivery.raw, delivery.headers));

    const python = process.env.COBRO_COMPAT_PYTHON;
    if (python) {
      const dir = mkdtempSync(path.join(tmpdir(), "cobro-webhook-"));
      const file = path.join(dir, "delivery.json");
      writeFileSync(file, JSON.stringify({ secret, raw: delivery.raw, headers: delivery.headers }));
      const out = execFileSync(python, [path.join(here, "../python/verify_webhook.py"), file], { encoding: "utf8" });
      assert.match(out, /verified/);
    }

    await api("DELETE", `/v1/webhook-endpoints/${created.body.id}`);
  } finally {
    rx.close();
  }
});
