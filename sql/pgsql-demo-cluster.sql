-- proxyd demo cluster (scripts/demo.sh and docker-compose.yml): the passdb
-- both proxyd nodes read, through demo/dovecot-sql.conf.ext.
--
-- Load it after pgsql.sql with the two backends' addresses as psql variables:
--   psql -d mail -v backend_a=127.0.0.2 -v backend_b=127.0.0.3 -f sql/pgsql-demo-cluster.sql
-- (the local twin uses loopback addresses, docker-compose.yml the containers'
-- fixed addresses).
--
-- One table, host and delay_until plain columns: `proxyctl move` derives its
-- UPDATE from such a password_query.  delay_until is text because Dovecot's
-- value may be "<UNIX time>+<random seconds>".
CREATE TABLE cluster_accounts (
  username varchar(255) NOT NULL,
  password varchar(255) NOT NULL,
  host varchar(64) NOT NULL,
  delay_until varchar(32) default NULL,
  PRIMARY KEY (username)
);

-- alice / alicepw on backend-a, bob / bobpw on backend-b (the hashes of
-- proxy_accounts in pgsql.sql); both backends know both users, so a user can
-- be moved either way.
INSERT INTO cluster_accounts (username, password, host) VALUES
  ('alice', '{SHA512-CRYPT}$6$0EcTTKZeHv6e/lm9$5NNZcIgoGbOif/yVkxcQ0.Z9Vcig1WDS.z9YfMwWWbrzHLwFyFAoRwPrH.4wHlIvlDIoCGRC2sZqpNmpI5PlY.', :'backend_a'),
  ('bob', '{SHA512-CRYPT}$6$Ghs3x1cN07pw5b1B$grHnnkD9hN49v3O8Uj4o2YT6b2MaPaoUjXK4ldDu7kQfyudi0Vz.qkYy3ot9ZhsBXc2IBYUF8fq3SZAqcY9eT.', :'backend_b');
