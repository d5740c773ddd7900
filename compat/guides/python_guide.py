"""The Python guide (seed 001, "Bills guide for Python") as a runnable example.

It performs the guide's flow against a running cobro, with only the base URL changed
(https://api.chipipay.com -> $COBRO_URL): browse the catalog with filters, POST the purchase
with plain httpx exactly as the guide's buy_sku does, poll until settled, check the DEV sandbox
markers. One line per step; exit code 0 on success, 1 with a message on the first failure.

The guide reads through the official SDK (chipi-stack; 2.4.1 is pinned here). Its models do
not match the API's camelCase schema (Sku, PaginatedResponse and Transaction declare
snake_case fields, some of which the API has never had), and GetSkuListQuery silently drops
the guide's filters; see docs/compat.md. So every SDK read in the guide is tried first, the
failure is checked to be exactly that parsing bug (the HTTP round trip to cobro succeeded),
and the same read is then made with plain httpx, which is what the script goes on with.

    COBRO_URL=http://127.0.0.1:8080 CHIPI_PUBLIC_KEY=pk_dev_... CHIPI_SECRET_KEY=sk_dev_... \
    CHIPI_JWT=eyJ... compat/python/.venv/bin/python compat/guides/python_guide.py
"""
import os
import sys
import time
import uuid

import httpx

USER_PHONE = "5512345678"  # the guide's example phone number
AMOUNT = 200  # the guide's "Telcel $200 prepaid"

# What chipi-stack 2.4.1's models require and cobro (like Chipi's API) does not send under
# those names. docs/compat.md quotes the same lists.
SKU_MISSING = {"org_id", "price", "is_active", "created_at", "updated_at"}
PAGE_MISSING = {"total_pages"}
TRANSACTION_MISSING = {
    "api_public_key", "transaction_hash", "block_number", "sender_address",
    "destination_address", "amountInUSD", "is_chipi_wallet", "created_at", "updated_at",
}


class StepFailed(Exception):
    pass


def step(name, detail=""):
    print(f"ok - {name}{': ' + detail if detail else ''}", flush=True)


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def env(name):
    value = os.environ.get(name)
    if not value:
        raise StepFailed(f"set {name} (compat/run sets COBRO_URL, CHIPI_PUBLIC_KEY, CHIPI_SECRET_KEY, CHIPI_JWT)")
    return value


def sdk_parse_failure(call, expected_by_location):
    """Runs an SDK read. Returns (result, None) if it parsed, or (None, summary) if it failed
    with the documented bug: a pydantic ValidationError made only of `missing` fields, exactly
    the expected ones. Anything else (an HTTP error from cobro, another exception) fails."""
    from chipi_sdk import ChipiError
    from pydantic import ValidationError

    try:
        return call(), None
    except ValidationError as error:
        kinds = {e["type"] for e in error.errors()}
        check(kinds == {"missing"}, f"SDK parse failed for another reason than missing fields: {error}")
        missing = {}
        for e in error.errors():
            where = "item" if len(e["loc"]) > 1 else "top"
            missing.setdefault(where, set()).add(e["loc"][-1])
        check(missing == expected_by_location,
              f"the SDK's model error changed: expected {expected_by_location}, got {missing}")
        return None, f"{error.title}: {error.error_count()} missing fields " + "; ".join(
            f"{where}: {', '.join(sorted(names))}" for where, names in sorted(missing.items()))
    except ChipiError as error:
        raise StepFailed(f"the SDK's request to cobro failed: {type(error).__name__} {error.status} {error.code}: {error}")


def main():
    cobro_url = env("COBRO_URL").rstrip("/")
    public_key = env("CHIPI_PUBLIC_KEY")
    secret_key = env("CHIPI_SECRET_KEY")
    bearer_token = env("CHIPI_JWT")

    # Initialise the SDK, as the guide does, plus alpha_url: the one change.
    try:
        from chipi_sdk import ChipiSDK, ChipiSDKConfig, GetSkuListQuery
    except ImportError as error:
        raise StepFailed(f"cannot import chipi_sdk (pip install -r compat/python/requirements.txt): {error}")
    sdk = ChipiSDK(
        config=ChipiSDKConfig(
            api_public_key=public_key,
            api_secret_key=secret_key,
            alpha_url=cobro_url,
        )
    )
    check(sdk.client.base_url == f"{cobro_url}/v1", f"SDK base URL {sdk.client.base_url}")
    step("initialise the SDK", f"chipi-stack ChipiSDK, alpha_url={cobro_url}")

    # Obtain a customer JWT: get_current_user_jwt() in the guide; minted by compat/run here.
    check(not bearer_token.startswith("sk_"), "CHIPI_JWT is a secret key, not a customer JWT")
    step("obtain a customer JWT", "from CHIPI_JWT")

    headers = {
        "Content-Type": "application/json",
        "x-api-key": public_key,
        "Authorization": f"Bearer {bearer_token}",
    }

    # Browse the catalog: get_sku_list(GetSkuListQuery(chipi_category=..., carrier_name=..., limit=50)).
    query = GetSkuListQuery(chipi_category="RECARGAS", carrier_name="Telcel", limit=50)
    sent = query.model_dump(exclude_none=True)
    check(sent == {"limit": 50}, f"GetSkuListQuery now sends {sent}")
    listing, why = sdk_parse_failure(
        lambda: sdk.get_sku_list(params=query, bearer_token=bearer_token),
        {"top": PAGE_MISSING, "item": SKU_MISSING},
    )
    if listing is not None:
        raise StepFailed("chipi-stack's get_sku_list parsed cobro's response: update docs/compat.md and use it")
    step("SDK get_sku_list (SDK bug, expected)",
         f"GetSkuListQuery dropped chipi_category and carrier_name (sent {sent}); {why}")

    response = httpx.get(
        f"{cobro_url}/v1/skus",
        params={"chipiCategory": "RECARGAS", "carrierName": "Telcel", "limit": 50},
        headers=headers,
        timeout=15.0,
    )
    response.raise_for_status()
    listing = response.json()
    for field in ("data", "total", "page", "limit", "totalPages"):
        check(field in listing, f"the list envelope has no {field}: {sorted(listing)}")
    check(listing["data"], "no Telcel recharge listed")
    for s in listing["data"]:
        check(s["chipiCategory"] == "RECARGAS" and "telcel" in s["carrierName"].lower(),
              f"{s['id']} does not match the filters")
    sku = next((s for s in listing["data"] if s.get("fixedAmount") == AMOUNT), None)
    check(sku is not None, f"SKU not found: no Telcel ${AMOUNT} among {[s['id'] for s in listing['data']]}")
    step("browse the catalog with httpx GET /v1/skus?chipiCategory=RECARGAS&carrierName=Telcel&limit=50",
         f"{listing['total']} matching SKUs; {sku['id']} {sku['name']} {sku['fixedAmount']} {sku['currency']}")

    got, why = sdk_parse_failure(lambda: sdk.get_sku(sku["id"], bearer_token=bearer_token), {"top": SKU_MISSING})
    if got is not None:
        raise StepFailed("chipi-stack's get_sku parsed cobro's response: update docs/compat.md")
    step("SDK get_sku (SDK bug, expected)", why)

    # Submit a purchase: the guide's buy_sku, verbatim but for the URL.
    body = {
        "transactionHash": f"order-{uuid.uuid4()}",
        "skuId": sku["id"],
        "skuReference": USER_PHONE,
        "currencyAmount": sku["fixedAmount"],
        "chain": "STARKNET",
        "token": "USDC",
        "walletAddress": "0x0",
        "orgMarkup": 0,
    }
    response = httpx.post(f"{cobro_url}/v1/sku-purchases", headers=headers, json=body, timeout=15.0)
    check(response.status_code == 201, f"POST /v1/sku-purchases: {response.status_code} {response.text}")
    transaction = response.json()
    purchase_id = transaction["id"]
    check(transaction["status"] in ("PENDING", "PROCESSING", "SUCCESS"), f"status {transaction['status']}")
    check(isinstance(transaction.get("ledgerEntryId"), str), "no ledgerEntryId")
    step("POST /v1/sku-purchases with httpx", f"Purchase created: {purchase_id} (status={transaction['status']})")

    # Poll for settlement: get_sku_purchase in the guide.
    got, why = sdk_parse_failure(
        lambda: sdk.get_sku_purchase(purchase_id, bearer_token=bearer_token), {"top": TRANSACTION_MISSING})
    if got is not None:
        raise StepFailed("chipi-stack's get_sku_purchase parsed cobro's response: update docs/compat.md")
    step("SDK get_sku_purchase (SDK bug, expected)", why)

    final = None
    for _ in range(12):
        response = httpx.get(f"{cobro_url}/v1/sku-purchases/{purchase_id}", headers=headers, timeout=15.0)
        response.raise_for_status()
        p = response.json()
        if p["status"] in ("SUCCESS", "FAILED"):
            final = p
            break
        time.sleep(2.5)
    check(final is not None, "Settlement timeout")
    check(final["status"] == "SUCCESS", f"Purchase failed: {final.get('errorMessage')}")
    check(final["id"] == purchase_id and final["skuId"] == sku["id"], f"another purchase came back: {final}")
    check(final["skuPurchaseAmount"] == AMOUNT and final["skuPurchaseCurrency"] == "MXN",
          f"amount {final['skuPurchaseAmount']} {final['skuPurchaseCurrency']}")
    step("poll GET /v1/sku-purchases/{id} with httpx until settled", f"{final['status']} file: {final['skuFileNumber']}")

    # DEV sandbox: the guide's "DEV response shape (key fields)".
    check(public_key.startswith("pk_dev_"), "not a DEV key")
    check(transaction["status"] == "SUCCESS", "DEV purchases are SUCCESS in the POST response")
    check(transaction["ledgerEntryId"].startswith("le-dev-"), f"ledgerEntryId {transaction['ledgerEntryId']}")
    check(str(final["skuFileNumber"]).startswith("dev-sandbox-"), f"skuFileNumber {final['skuFileNumber']}")
    check(final["id"].startswith("tx-"), f"id {final['id']}")
    step("DEV sandbox response shape", f"ledgerEntryId={transaction['ledgerEntryId']}")

    # The SDK's error path does work: cobro's error body becomes ChipiApiError(code, status).
    from chipi_sdk import ChipiApiError
    try:
        sdk.get_sku("sku-does-not-exist", bearer_token=bearer_token)
    except ChipiApiError as error:
        check((error.status, error.code) == (404, "SKU_NOT_FOUND"), f"got {error.status} {error.code}")
    else:
        raise StepFailed("get_sku of an unknown id did not raise")
    step("SDK errors parse", "get_sku('sku-does-not-exist') raises ChipiApiError 404 SKU_NOT_FOUND")


if __name__ == "__main__":
    try:
        main()
    except StepFailed as failure:
        print(f"not ok - {failure}", flush=True)
        sys.exit(1)
    except httpx.HTTPError as error:
        detail = getattr(getattr(error, "response", None), "text", "")
        print(f"not ok - HTTP error: {error} {detail}", flush=True)
        sys.exit(1)
    print("python guide: all steps passed")
