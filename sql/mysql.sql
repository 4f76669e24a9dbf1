-- proxyd: schema and demo data for MySQL / MariaDB.
--   mariadb mail < sql/mysql.sql
-- Used by passdb { driver = sql  args = dovecot-sql-mysql.conf.ext }.

-- Dovecot's "password forwarding" example (Proxying wiki page), verbatim:
-- the proxy does not check the password; the backend does.
CREATE TABLE proxy (
  user varchar(255) NOT NULL,
  host varchar(16) default NULL,
  destuser varchar(255) NOT NULL default '',
  PRIMARY KEY  (user)
);

-- Dovecot's "proxy_maybe" example, verbatim: the proxy checks the password
-- (default_pass_scheme MD5: $1$... MD5-CRYPT) and rewrites the user to user@domain.
CREATE TABLE users (
  user varchar(255) NOT NULL,
  domain varchar(255) NOT NULL,
  password varchar(100) NOT NULL,
  host varchar(16) NOT NULL,
  home varchar(100) NOT NULL,
  PRIMARY KEY (user)
);

-- What the proxyd demo uses: one row per account with the routing fields.
-- NULL columns are skipped, so a NULL port means the protocol's default port
-- and a NULL nologin means the login is allowed.
CREATE TABLE proxy_accounts (
  username varchar(255) NOT NULL,
  password varchar(255) default NULL,
  host varchar(64) NOT NULL,
  port smallint unsigned default NULL,
  destuser varchar(255) default NULL,
  nologin char(1) default NULL,
  reason varchar(255) default NULL,
  PRIMARY KEY (username)
);

-- The example rows of the wiki page (john logs in as himself, joe as joe@example.com).
INSERT INTO proxy (user, host, destuser) VALUES
  ('john', '192.168.0.1', ''),
  ('joe', '192.168.0.2', 'joe@example.com');

-- joe@example.com / joepw
INSERT INTO users (user, domain, password, host, home) VALUES
  ('joe', 'example.com', '$1$Z9iG5ldI$G1Cb4.aAZ4MEXfx2n/vzk/', '127.0.0.2', '/home/joe');

-- The demo's backends (scripts/demo.sh): alice / alicepw and bob / bobpw.
INSERT INTO proxy_accounts (username, password, host, port) VALUES
  ('alice', '{SHA512-CRYPT}$6$0EcTTKZeHv6e/lm9$5NNZcIgoGbOif/yVkxcQ0.Z9Vcig1WDS.z9YfMwWWbrzHLwFyFAoRwPrH.4wHlIvlDIoCGRC2sZqpNmpI5PlY.', '127.0.0.2', 10143),
  ('bob', '{SHA512-CRYPT}$6$Ghs3x1cN07pw5b1B$grHnnkD9hN49v3O8Uj4o2YT6b2MaPaoUjXK4ldDu7kQfyudi0Vz.qkYy3ot9ZhsBXc2IBYUF8fq3SZAqcY9eT.', '127.0.0.3', 10143);
-- carol / carolpw may not log in for now (nologin + reason)
INSERT INTO proxy_accounts (username, password, host, nologin, reason) VALUES
  ('carol', '{SHA512-CRYPT}$6$cCsKHnuh9O157pTp$AJl9P40scxaKQXl.dCEfHClngk6v.8vwlZyj1LQJsOnrSwFxmTYcfWFmtezwYD1JdiYeHqgIO7fn0VAGj2KIv1', '127.0.0.2', 'Y', 'Mailbox is being moved, try again in an hour');
