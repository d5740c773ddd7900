// Catalog compatibility: the official Chipi SDK (@chipi-stack/backend 14.13.0), unchanged,
// pointed at a cobro server through its `alphaUrl` option (the SDK calls `${alphaUrl}/v1/...`).
//
//   COBRO_URL=http://127.0.0.1:8080 CHIPI_PUBLIC_KEY=pk_dev_... CHIPI_SECRET_KEY=sk_dev_... \
//   CHIPI_JWT=eyJ... node --test compat/node/
import { test } from "node:test";
import assert from "node:assert/strict";

import { loadBackend } from "./sdk.mjs";

const { ChipiSDK, ChipiServerSDK } = await loadBackend();
const { COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY, CHIPI_JWT } = process.env;
if (!(COBRO_URL && CHIPI_PUBLIC_KEY && CHIPI_SECRET_KEY && CHIPI_JWT)) {
  // A suite that skips would pass vacuously in CI: refuse to run instead. compat/run sets these.
  throw new Error("set COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY and CHIPI_JWT (compat/run does)");
}
const skip = false;
const sdk = new ChipiSDK({ apiPublicKey: CHIPI_PUBLIC_KEY, alphaUrl: COBRO_URL });
const list = (params) => sdk.getSkuList(params, CHIPI_JWT);

test("getSkuList without filters returns the paginated envelope", { skip }, async () => {
  const res = await list({});
  assert.ok(Array.isArray(res.data));
  assert.ok(res.total >= 60, `total ${res.total}`);
  assert.equal(res.page, 1);
  assert.equal(res.limit, 10);
  assert.equal(res.totalPages, Math.ceil(res.total / res.limit));
  assert.equal(res.data.length, 10);
  for (const sku of res.data) {
    for (const field of ["id", "name", "category", "currency", "referenceRegexValidation"]) {
      assert.equal(typeof sku[field], "string", `${sku.id}.${field}`);
    }
  }
});

const filters = [
  [{ provider: "TET" }, (s) => s.provider === "TET"],
  [{ category: "RECARGAS" }, (s) => s.category === "RECARGAS"],
  [{ chipiCategory: "RECARGAS" }, (s) => s.chipiCategory === "RECARGAS"],
  [{ carrierName: "telcel" }, (s) => s.carrierName.includes("Telcel")],
];
for (const [filter, matches] of filters) {
  test(`getSkuList filters by ${JSON.stringify(filter)}`, { skip }, async () => {
    const res = await list({ ...filter, limit: 100 });
    assert.ok(res.data.length > 0, "no SKU matched");
    for (const sku of res.data) assert.ok(matches(sku), `${sku.id} does not match`);
  });
}

test("getSkuList paginates with page and limit", { skip }, async () => {
  const [first, second] = await Promise.all([list({ limit: 5, page: 1 }), list({ limit: 5, page: 2 })]);
  assert.equal(second.page, 2);
  assert.equal(second.limit, 5);
  assert.equal(second.data.length, 5);
  const firstIds = new Set(first.data.map((s) => s.id));
  assert.ok(second.data.every((s) => !firstIds.has(s.id)), "page 2 repeats page 1");
});

test("getSkuList passes locale through", { skip }, async () => {
  const [en, es] = await Promise.all([list({ limit: 100, locale: "en" }), list({ limit: 100, locale: "es" })]);
  assert.equal(es.total, en.total);
  const byId = new Map(en.data.map((s) => [s.id, s]));
  const pairs = es.data.filter((s) => byId.has(s.id)).map((s) => [byId.get(s.id), s]);
  assert.ok(pairs.some(([e, s]) => e.name !== s.name || e.description !== s.description), "nothing translated");
});

test("getSku returns one SKU", { skip }, async () => {
  const sku = await sdk.getSku("sku-tl-TEL010", CHIPI_JWT);
  assert.equal(sku.id, "sku-tl-TEL010");
  assert.equal(sku.fixedAmount, 10);
  assert.equal(sku.currency, "MXN");
});

test("getSku of an unknown id rejects with ChipiApiError 404 SKU_NOT_FOUND", { skip }, async () => {
  // ChipiApiError lives in @chipi-stack/shared and is not re-exported by the backend package.
  await assert.rejects(sdk.getSku("sku-does-not-exist", CHIPI_JWT), (err) => {
    assert.equal(err.constructor.name, "ChipiApiError");
    assert.equal(err.name, "ChipiApiError");
    assert.equal(err.status, 404);
    assert.equal(err.code, "SKU_NOT_FOUND");
    assert.equal(typeof err.message, "string");
    return true;
  });
});

test("catalog reads accept the secret key as bearer (ChipiServerSDK default)", { skip }, async () => {
  const server = new ChipiServerSDK({
    apiPublicKey: CHIPI_PUBLIC_KEY,
    apiSecretKey: CHIPI_SECRET_KEY,
    alphaUrl: COBRO_URL,
  });
  const sku = await server.getSku("sku-tl-TEL010"); // no bearer: the SDK sends the secret key
  assert.equal(sku.id, "sku-tl-TEL010");
});
