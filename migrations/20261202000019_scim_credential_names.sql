-- One live provisioning credential per name (the name is the SCIM client:
-- its externalIds are kept under it). The check before the insert
-- (`store::scim::credential_name_taken`) raced: two simultaneous creates
-- could both pass it. Live duplicates made that way are revoked, keeping the
-- oldest, before the index is built.
UPDATE api_keys k SET revoked_at = now()
 WHERE k.scope = 'scim' AND k.revoked_at IS NULL
   AND EXISTS (SELECT 1 FROM api_keys o
                WHERE o.scope = 'scim' AND o.revoked_at IS NULL AND o.name = k.name
                  AND (o.created_at, o.id) < (k.created_at, k.id));

CREATE UNIQUE INDEX api_keys_live_scim_name ON api_keys (name) WHERE scope = 'scim' AND revoked_at IS NULL;
