-- Profile fields the data tracker keeps for every user (and any directory
-- shows): affiliation, contact details, ORCID iD and a web page. Empty
-- means unset.
ALTER TABLE users
    ADD COLUMN affiliation text NOT NULL DEFAULT '',
    ADD COLUMN contact     text NOT NULL DEFAULT '',
    ADD COLUMN orcid       text NOT NULL DEFAULT '',
    ADD COLUMN url         text NOT NULL DEFAULT '';
