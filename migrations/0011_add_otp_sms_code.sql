-- 0011_add_otp_sms_code.sql - the write-side state of the OTP-SMS sign-in
-- (ChallengeOTPSMS, CheckOTPSMS): the pending code (ciphertext, as code_enc for phone codes),
-- its expiry, and the failed checks the lockout policy counts.
-- Existing rows get "no pending code, no failures", which is what folding
-- their events (none of the new types) gives.

ALTER TABLE factord.users
    ADD COLUMN otp_code_enc        text        NOT NULL DEFAULT '',
    ADD COLUMN otp_code_expires_at timestamptz,
    ADD COLUMN otp_failed          integer     NOT NULL DEFAULT 0
        CONSTRAINT users_otp_failed_check CHECK (otp_failed >= 0);
