// Purchases compatibility, following the Node guide (seed 000): getUsdAmount and getSkuPurchase
// through the official SDK (@chipi-stack/backend 14.13.0, unchanged, `alphaUrl` pointed at
// cobro); the purchase itself as a plain fetch POST with the guide's headers and body.
// With a dev key the purchase is the sandbox: SUCCESS at once, synthetic ids, no credits moved.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { loadBackend } from "./sdk.mjs";

const { ChipiSDK } = await loadBackend();
const { COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY, CHIPI_JWT } = process.env;
if (!(COBRO_URL && CHIPI_PUBLIC_KEY && CHIPI_SECRET_KEY && CHIPI_JWT)) {
  throw new Error("set COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY and CHIPI_JWT (compat/run does)");
}
const sdk = new ChipiSDK({ apiPublicKey: CHIPI_PUBLIC_KEY, alphaUrl: COBRO_URL });

// Exactly the guide's request: plain fetch, x-api-key + customer JWT, CreateSkuPurchaseInput.
async function buy(sku, phone, transactionHash = `order-${randomUUID()}`) {
  return fetch(`${COBRO_URL}/v1/sku-purchases`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "x-api-key": CHIPI_PUBLIC_KEY,
      Authorization: `Bearer ${CHIPI_JWT}`,
    },
    body: JSON.stringify({
      transactionHash,
      skuId: sku.id,
      skuReference: phone,
      currencyAmount: sku.fixedAmount,
      chain: "STARKNET",
      token: "USDC",
      walletAddress: "0x0",
      orgMarkup: 0,
    }),
  });
}

test("getUsdAmount converts through the exchange endpoint (a bare number)", async () => {
  const usd = await sdk.getUsdAmount(200, "MXN", CHIPI_JWT);
  assert.ok(Number.isFinite(usd) && usd > 0, `got ${usd}`);
  assert.equal(usd, 11.76);
});

test("the guide's flow: browse, POST the purchase, poll getSkuPurchase until settled", async () => {
  const listing = await sdk.getSkuList({ chipiCategory: "RECARGAS", carrierName: "Telcel", limit: 50 }, CHIPI_JWT);
  const sku = listing.data.find((s) => s.fixedAmount === 10);
  assert.ok(sku, "a Telcel $10 SKU");
  const response = await buy(sku, "5512345678");
  assert.equal(response.status, 201);
  const transaction = await response.json();
  assert.equal(transaction.status, "SUCCESS", "DEV keys settle at once");
  assert.match(transaction.ledgerEntryId, /^le-dev-/);
  assert.match(transaction.skuFileNumber, /^dev-sandbox-\d+$/);

  let purchase;
  for (let i = 0; i < 12; i++) {
    purchase = await sdk.getSkuPurchase(transaction.id, CHIPI_JWT);
    if (purchase.status === "SUCCESS" || purchase.status === "FAILED") break;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.equal(purchase.id, transaction.id);
  assert.equal(purchase.status, "SUCCESS");
  assert.equal(purchase.skuId, sku.id);
  assert.equal(purchase.skuPurchaseAmount, 10);
  assert.equal(purchase.skuPurchaseCurrency, "MXN");
  assert.equal(purchase.skuFileNumber, transaction.skuFileNumber);
});

test("re-sending the same transactionHash returns the existing row (no double charge)", async () => {
  const sku = await sdk.getSku("sku-tl-TEL010", CHIPI_JWT);
  const key = `order-${randomUUID()}`;
  const first = await (await buy(sku, "5512345678", key)).json();
  const again = await buy(sku, "5512345678", key);
  assert.equal(again.status, 200);
  assert.equal(again.headers.get("idempotent-replayed"), "true");
  assert.equal((await again.json()).id, first.id);
});

test("getSkuPurchase of an unknown id rejects with ChipiApiError 404", async () => {
  await assert.rejects(sdk.getSkuPurchase("tx-does-not-exist", CHIPI_JWT), (err) => {
    assert.equal(err.name, "ChipiApiError");
    assert.equal(err.status, 404);
    assert.equal(err.code, "PURCHASE_NOT_FOUND");
    return true;
  });
});

test("the secret key is not a valid Bearer for purchases (401, says a customer JWT is required)", async () => {
  const response = await fetch(`${COBRO_URL}/v1/sku-purchases`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "x-api-key": CHIPI_PUBLIC_KEY, Authorization: `Bearer ${CHIPI_SECRET_KEY}` },
    body: JSON.stringify({}),
  });
  assert.equal(response.status, 401);
  const body = await response.json();
  assert.equal(body.code, "CUSTOMER_JWT_REQUIRED");
  assert.match(body.message, /customer JWT/);
});
