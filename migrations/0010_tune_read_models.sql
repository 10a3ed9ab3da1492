-- 0010_tune_read_models.sql - room for HOT updates in the projector's
-- applied sequences (0008).
--
-- Every batch the projector applies moves the applied sequence of each user
-- it touches: an update of a row that a first event inserted into a full
-- page. Free room in each page lets most of those updates be HOT (no new
-- index entry in the three-column text key), as 0007 did for users. In a
-- catch-up of 780,000 events (260,000 users met twice) HOT updates went
-- from 26 % to most of them and the catch-up gained a few per cent. It
-- applies to pages written from now on (a TRUNCATE or a rebuild rewrites
-- them all).

ALTER TABLE factord.projected_sequences SET (fillfactor = 80);
