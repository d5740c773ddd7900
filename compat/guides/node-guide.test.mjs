// The Node guide (seed 000, "Bills guide for Node") as a runnable example, one test per step,
// in the guide's order. The only change from the guide is the base URL: the SDK's `alphaUrl`
// option and the fetch base point at COBRO_URL instead of https://api.chipipay.com.
//
//   - reads (getSkuList, getSkuPurchase) through @chipi-stack/backend 14.13.0, loaded by
//     ../node/sdk.mjs (the published package, with the dependency shim described there);
//   - the purchase as a plain fetch POST to /v1/sku-purchases with the guide's headers and
//     CreateSkuPurchaseInput body (the SDK's purchaseSku is the on-chain wallet path);
//   - polling getSkuPurchase until SUCCESS or FAILED.
//
// With a dev key (compat/run creates one) the purchase runs in the DEV sandbox: SUCCESS at
// once, a synthetic ledgerEntryId and skuFileNumber, no credits moved.
//
//   COBRO_URL=http://127.0.0.1:8080 CHIPI_PUBLIC_KEY=pk_dev_... CHIPI_SECRET_KEY=sk_dev_... \
//   CHIPI_JWT=eyJ... node --test compat/guides/
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { loadBackend } from "../node/sdk.mjs";

const { COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY, CHIPI_JWT } = process.env;
if (!(COBRO_URL && CHIPI_PUBLIC_KEY && CHIPI_SECRET_KEY && CHIPI_JWT)) {
  // Skipping would pass vacuously in CI: refuse to run instead. compat/run sets these.
  throw new Error("set COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY and CHIPI_JWT (compat/run does)");
}

// The guide's values: a Telcel $200 prepaid recharge for a 10-digit Mexican phone number.
const USER_PHONE = "5512345678";
const AMOUNT = 200;

// State handed from one step to the next (node:test runs a file's top-level tests in order).
let sdk;
let bearerToken;
let chosenSku;
let transaction;

test("step 1, initialise the SDK: @chipi-stack/backend with alphaUrl pointed at cobro", async () => {
  const { ChipiSDK } = await loadBackend();
  sdk = new ChipiSDK({
    apiPublicKey: CHIPI_PUBLIC_KEY,
    apiSecretKey: CHIPI_SECRET_KEY,
    alphaUrl: COBRO_URL, // the one change: https://api.chipipay.com -> cobro
  });
  assert.equal(typeof sdk.getSkuList, "function");
  assert.equal(typeof sdk.getSkuPurchase, "function");
});

test("step 2, resolve a customer JWT (here: minted by cobro's built-in issuer)", () => {
  // In the guide it comes from the authenticated session; the secret key is not one.
  bearerToken = CHIPI_JWT;
  assert.equal(bearerToken.split(".").length, 3, "a compact JWT");
  assert.ok(!bearerToken.startsWith("sk_"), "the secret key is not a customer JWT");
});

test("step 3, browse the catalog: getSkuList with chipiCategory and carrierName", async () => {
  assert.ok(sdk, "step 1 did not run");
  const listing = await sdk.getSkuList({ chipiCategory: "RECARGAS", carrierName: "Telcel", limit: 50 }, bearerToken);
  // PaginatedResponse<Sku>: { data, total, page, limit, totalPages }.
  for (const field of ["total", "page", "limit", "totalPages"]) {
    assert.equal(typeof listing[field], "number", `listing.${field}`);
  }
  assert.ok(Array.isArray(listing.data) && listing.data.length > 0, "no Telcel recharge listed");
  assert.equal(listing.page, 1);
  assert.equal(listing.limit, 50);
  assert.equal(listing.totalPages, Math.ceil(listing.total / listing.limit));
  for (const sku of listing.data) {
    assert.equal(sku.chipiCategory, "RECARGAS", `${sku.id} is not in RECARGAS`);
    assert.match(sku.carrierName, /telcel/i, `${sku.id} is not a Telcel SKU`);
  }
  chosenSku = listing.data.find((s) => s.fixedAmount === AMOUNT);
  assert.ok(chosenSku, `no Telcel $${AMOUNT} SKU in ${listing.data.map((s) => s.id).join(", ")}`);
  assert.equal(chosenSku.currency, "MXN");
  assert.ok(new RegExp(chosenSku.referenceRegexValidation).test(USER_PHONE), "the phone does not match the SKU's regex");
});

test("step 3b, the other two filters the guide lists: provider and category", async () => {
  assert.ok(chosenSku, "step 3 did not find a SKU");
  const listing = await sdk.getSkuList(
    { provider: chosenSku.provider, category: chosenSku.category, carrierName: "telcel", limit: 100 },
    bearerToken,
  );
  assert.ok(listing.data.some((s) => s.id === chosenSku.id), `${chosenSku.id} missing from the filtered list`);
  for (const sku of listing.data) {
    assert.equal(sku.provider, chosenSku.provider);
    assert.equal(sku.category, chosenSku.category);
  }
});

test("step 4, buy the SKU: plain fetch POST /v1/sku-purchases with the guide's headers and body", async () => {
  assert.ok(chosenSku, "step 3 did not find a SKU");
  const response = await fetch(`${COBRO_URL}/v1/sku-purchases`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "x-api-key": CHIPI_PUBLIC_KEY,
      Authorization: `Bearer ${bearerToken}`,
    },
    body: JSON.stringify({
      // transactionHash is the idempotency key: any unique string works.
      transactionHash: `order-${randomUUID()}`,
      skuId: chosenSku.id,
      skuReference: USER_PHONE,
      currencyAmount: chosenSku.fixedAmount,
      chain: "STARKNET",
      token: "USDC",
      walletAddress: "0x0", // required by the DTO, unused by the credits flow
      orgMarkup: 0, // optional analytics field
    }),
  });
  const text = await response.text();
  assert.equal(response.status, 201, text);
  transaction = JSON.parse(text);
  assert.match(transaction.id, /\S/);
  assert.ok(["PENDING", "PROCESSING", "SUCCESS"].includes(transaction.status), `status ${transaction.status}`);
  assert.equal(typeof transaction.ledgerEntryId, "string", "the debit's ledger entry");
  assert.equal(transaction.skuId, chosenSku.id);
  assert.equal(transaction.skuReference, USER_PHONE);
});

test("step 5, poll getSkuPurchase until settled", async () => {
  assert.ok(transaction, "step 4 did not create a purchase");
  let purchase;
  for (let i = 0; i < 12; i++) {
    purchase = await sdk.getSkuPurchase(transaction.id, bearerToken);
    if (purchase.status === "SUCCESS" || purchase.status === "FAILED") break;
    await new Promise((resolve) => setTimeout(resolve, 2500));
  }
  assert.equal(purchase.id, transaction.id);
  assert.equal(purchase.status, "SUCCESS", `settled as ${purchase.status}: ${purchase.errorMessage}`);
  assert.equal(typeof purchase.skuFileNumber, "string", "the carrier's receipt");
  assert.equal(purchase.skuPurchaseAmount, AMOUNT);
  assert.equal(purchase.skuPurchaseCurrency, "MXN");
});

test("step 6, DEV sandbox: a pk_dev_ key settles at once with synthetic ids", () => {
  assert.ok(transaction, "step 4 did not create a purchase");
  assert.match(CHIPI_PUBLIC_KEY, /^pk_dev_/);
  assert.equal(transaction.status, "SUCCESS", "deterministic SUCCESS already in the POST response");
  assert.match(transaction.ledgerEntryId, /^le-dev-[0-9a-f-]{36}$/);
  assert.match(transaction.skuFileNumber, /^dev-sandbox-\d+$/);
});
