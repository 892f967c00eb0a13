-- 0005_runtime_grants: what the runtime role (through tododb_app, made by
-- 0002) needs on the tables of migrations after 0002. Every later migration
-- grants its own new tables the same way.
GRANT SELECT, INSERT, DELETE ON user_identities TO tododb_app;
