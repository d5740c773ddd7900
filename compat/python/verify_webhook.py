"""Verifies one cobro webhook delivery with the official PyPI `standardwebhooks` package and
checks `chipi-signature` (hex HMAC-SHA256 of the raw body with the secret).

    python verify_webhook.py delivery.json   # {"secret", "raw", "headers"}
"""
import hashlib
import hmac
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

with open(sys.argv[1], encoding="utf-8") as f:
    d = json.load(f)
secret, raw, headers = d["secret"], d["raw"], d["headers"]

payload = Webhook(secret).verify(raw, headers)
assert payload["type"].startswith("sku-purchase."), payload

expected = hmac.new(secret.encode(), raw.encode(), hashlib.sha256).hexdigest()
assert hmac.compare_digest(headers["chipi-signature"], expected), "chipi-signature mismatch"

try:
    Webhook(secret).verify(raw.replace("SUCCESS", "FAILED"), headers)
except WebhookVerificationError:
    pass
else:
    raise SystemExit("a tampered body verified")

print("verified with standardwebhooks (PyPI) and chipi-signature")
