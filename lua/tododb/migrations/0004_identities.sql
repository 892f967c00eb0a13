-- 0004_identities: users from an external identity provider (an OpenID/JWT
-- issuer such as Better Auth). Such a user may have no password and no email;
-- (issuer, subject) names at most one user. Citus: users and user_identities
-- are both reference tables (the lookup is by issuer and subject, not by
-- user id), so the foreign key and the unique key hold on every node.

ALTER TABLE users ALTER COLUMN hashed_password DROP NOT NULL;
ALTER TABLE users ALTER COLUMN email DROP NOT NULL;

CREATE TABLE user_identities (
  issuer     text NOT NULL CHECK (char_length(issuer) BETWEEN 1 AND 1024),
  subject    text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 255),
  user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  PRIMARY KEY (issuer, subject)
);
-- The cascade from users, and listing a user's identities.
CREATE INDEX user_identities_user_id ON user_identities (user_id);
