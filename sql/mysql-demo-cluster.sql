-- proxyd demo cluster on MariaDB (docker-compose.yml, profile "mariadb"): the
-- table of sql/pgsql-demo-cluster.sql, read through
-- demo/docker/dovecot-sql-mysql.conf.ext with demo/proxyd.conf's password_query.
--
-- Load it after mysql.sql with the two backends' addresses as user variables:
--   mariadb mail -e "SET @backend_a = '127.0.0.2', @backend_b = '127.0.0.3'; \
--     SOURCE sql/mysql-demo-cluster.sql"
-- (docker/mariadb/init-demo.sh does so with the containers' addresses).
CREATE TABLE cluster_accounts (
  username varchar(255) NOT NULL,
  password varchar(255) NOT NULL,
  host varchar(64) NOT NULL,
  delay_until varchar(32) default NULL,
  PRIMARY KEY (username)
);

-- alice / alicepw on backend-a, bob / bobpw on backend-b (the hashes of
-- pgsql-demo-cluster.sql)
INSERT INTO cluster_accounts (username, password, host) VALUES
  ('alice', '{SHA512-CRYPT}$6$0EcTTKZeHv6e/lm9$5NNZcIgoGbOif/yVkxcQ0.Z9Vcig1WDS.z9YfMwWWbrzHLwFyFAoRwPrH.4wHlIvlDIoCGRC2sZqpNmpI5PlY.', @backend_a),
  ('bob', '{SHA512-CRYPT}$6$Ghs3x1cN07pw5b1B$grHnnkD9hN49v3O8Uj4o2YT6b2MaPaoUjXK4ldDu7kQfyudi0Vz.qkYy3ot9ZhsBXc2IBYUF8fq3SZAqcY9eT.', @backend_b);
