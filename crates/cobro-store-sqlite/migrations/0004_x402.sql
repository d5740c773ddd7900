-- 0004: x402 payments, one row per (payer, nonce): the nonce is consumed for good when the
-- row appears, and the row records the settlement state machine
-- (reserved -> submitted -> settled | failed).
CREATE TABLE x402_payments (
    payer       TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('reserved', 'submitted', 'settled', 'failed')),
    tx_hash     TEXT,
    network     TEXT NOT NULL,
    asset       TEXT NOT NULL,
    pay_to      TEXT NOT NULL,
    amount      TEXT NOT NULL,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (payer, nonce)
);
CREATE INDEX x402_payments_unfinished ON x402_payments (state)
    WHERE state IN ('reserved', 'submitted');
