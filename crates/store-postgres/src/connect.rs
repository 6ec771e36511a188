//! From a database URL and [`PostgresOptions`] to sqlx's connect options,
//! refusing what cannot work before any connection is tried, and the
//! errors of opening, which show the URL only with its password hidden.

use std::path::PathBuf;

use rm_store::StoreError;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::ConnectOptions;
use url::Url;

use crate::codec;
use crate::PostgresOptions;

/// How long the one direct attempt of [`Target::why_not`] may take.
const WHY_NOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What stands for a password in a URL shown to people.
const HIDDEN: &str = "***";

/// Why a PostgreSQL store could not be opened. Every URL in these
/// messages has its password hidden.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL does not parse (the URL itself is not repeated: the
    /// password could not be told from the rest).
    #[error("the database URL is not a valid URL: {0}")]
    InvalidUrl(#[source] url::ParseError),
    /// Not a PostgreSQL URL.
    #[error("the database URL {url} is not a PostgreSQL URL (postgres:// or postgresql://)")]
    Scheme {
        /// The URL, password hidden.
        url: String,
    },
    /// An `sslmode` libpq does not know.
    #[error(
        "sslmode `{value}` in {url} is not one of disable, allow, prefer, require, verify-ca, \
         verify-full"
    )]
    SslMode {
        /// The value given.
        value: String,
        /// The URL, password hidden.
        url: String,
    },
    /// `sslrootcert` names no readable file.
    #[error("sslrootcert {} in {url} cannot be read: {source}", path.display())]
    RootCert {
        /// The file named.
        path: PathBuf,
        /// The URL, password hidden.
        url: String,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// [`PostgresOptions::pool_size`] is 0.
    #[error("the pool size must be at least 1")]
    PoolSize,
    /// [`PostgresOptions::schema`] is not a plain identifier.
    #[error(
        "schema name `{0}` is not a plain identifier (lower-case letters, digits and `_`, not \
         starting with a digit, at most 63 bytes)"
    )]
    SchemaName(String),
    /// [`PostgresOptions::schema`] names no schema of the database.
    #[error("schema `{schema}` does not exist in {url}")]
    MissingSchema {
        /// The schema named.
        schema: String,
        /// The URL, password hidden.
        url: String,
    },
    /// The server could not be reached or refused the login.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// sqlx's error (PostgreSQL's own words for a refused login).
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed; the database is left at the last one that
    /// succeeded (each runs in its own transaction).
    #[error("cannot bring the schema of {url} up to date: {source}")]
    Migrate {
        /// The URL, password hidden.
        url: String,
        /// sqlx's error.
        #[source]
        source: MigrateError,
    },
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> StoreError {
        StoreError::Backend(Box::new(e))
    }
}

/// `url` as it may be shown: the password (in the user part or as a
/// `password` parameter) replaced by `***`. A string that does not parse
/// as a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => redact(&parsed),
        Err(_) => String::from("<not a valid URL>"),
    }
}

fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have a user part, which a URL
        // with a password has.
        let _ = shown.set_password(Some(HIDDEN));
    }
    if url.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    HIDDEN.to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// A checked URL, ready to connect.
pub(crate) struct Target {
    pub(crate) connect_options: PgConnectOptions,
    /// The URL to show in errors and logs.
    pub(crate) redacted: String,
}

impl Target {
    /// Checks `raw` and `options` and turns them into connect options.
    pub(crate) fn parse(raw: &str, options: &PostgresOptions) -> Result<Target, OpenError> {
        let url = Url::parse(raw).map_err(OpenError::InvalidUrl)?;
        let redacted = redact(&url);
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(OpenError::Scheme { url: redacted });
        }
        if options.pool_size == 0 {
            return Err(OpenError::PoolSize);
        }
        let mut root_cert = None;
        for (key, value) in url.query_pairs() {
            match &*key {
                "sslmode" | "ssl-mode" => {
                    value.parse::<PgSslMode>().map_err(|_| OpenError::SslMode {
                        value: value.clone().into_owned(),
                        url: redacted.clone(),
                    })?;
                }
                "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                    let path = PathBuf::from(&*value);
                    if let Err(source) = std::fs::File::open(&path) {
                        return Err(OpenError::RootCert {
                            path,
                            url: redacted,
                            source,
                        });
                    }
                    root_cert = Some(path);
                }
                _ => {}
            }
        }
        let mut connect_options =
            PgConnectOptions::from_url(&url).map_err(|source| OpenError::Connect {
                url: redacted.clone(),
                source,
            })?;
        // Named in pg_stat_activity, unless the URL names it otherwise.
        if connect_options.get_application_name().is_none() {
            connect_options = connect_options.application_name("restic-manager");
        }
        // libpq checks the certificate under `require` when it is given a
        // CA to check it against; sqlx alone would not.
        let given_ca = root_cert.is_some() || std::env::var_os("PGSSLROOTCERT").is_some();
        if matches!(connect_options.get_ssl_mode(), PgSslMode::Require) && given_ca {
            connect_options = connect_options.ssl_mode(PgSslMode::VerifyCa);
        }
        if let Some(schema) = &options.schema {
            if !is_plain_identifier(schema) {
                return Err(OpenError::SchemaName(schema.clone()));
            }
            connect_options = connect_options.options([("search_path", schema)]);
        }
        Ok(Target {
            connect_options,
            redacted,
        })
    }

    /// The error of one direct connection attempt, for when the pool only
    /// says that it timed out.
    pub(crate) async fn why_not(&self) -> sqlx::Error {
        let attempt = self.connect_options.connect();
        match tokio::time::timeout(WHY_NOT_TIMEOUT, attempt).await {
            Ok(Err(e)) => e,
            Ok(Ok(connection)) => {
                // It works now: the pool was merely too slow.
                let _ = sqlx::Connection::close(connection).await;
                sqlx::Error::PoolTimedOut
            }
            Err(_) => sqlx::Error::PoolTimedOut,
        }
    }

    /// A failure to connect (or of the first query on a new pool).
    pub(crate) fn connect_error(&self, source: sqlx::Error) -> StoreError {
        let fault = codec::storage_fault(&source);
        let error = OpenError::Connect {
            url: self.redacted.clone(),
            source,
        };
        match fault {
            Some(fault) => StoreError::Unavailable {
                fault,
                source: Box::new(error),
            },
            None => error.into(),
        }
    }

    /// A failure of the migrations.
    pub(crate) fn migrate_error(&self, source: MigrateError) -> StoreError {
        let fault = match &source {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
                codec::storage_fault(e)
            }
            _ => None,
        };
        let error = OpenError::Migrate {
            url: self.redacted.clone(),
            source,
        };
        match fault {
            Some(fault) => StoreError::Unavailable {
                fault,
                source: Box::new(error),
            },
            None => error.into(),
        }
    }
}

/// A schema name that needs no quoting and means the same quoted or not.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://rm:s3cret@db.example:5432/rm?sslmode=verify-full"),
            "postgres://rm:***@db.example:5432/rm?sslmode=verify-full"
        );
        let shown = redact_url("postgresql://db/rm?user=rm&password=s3cret&sslmode=require");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("password=***") || shown.contains("password=%2A%2A%2A"));
        assert_eq!(redact_url("postgres://rm@db/rm"), "postgres://rm@db/rm");
        assert_eq!(redact_url("not a url s3cret"), "<not a valid URL>");
    }

    fn refused(url: &str, options: &PostgresOptions) -> String {
        match Target::parse(url, options) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn what_cannot_work_is_refused_by_name_without_the_password() {
        let options = PostgresOptions::default();
        let e = refused("mysql://rm:s3cret@db/rm", &options);
        assert!(e.contains("not a PostgreSQL URL"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = refused("postgres://rm:s3cret@db/rm?sslmode=always", &options);
        assert!(e.contains("sslmode `always`"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = refused(
            "postgres://rm:s3cret@db/rm?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            &options,
        );
        assert!(e.contains("sslrootcert /nonexistent/ca.crt"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = refused("postgres://rm:s3cret@db:notaport/rm", &options);
        assert!(e.contains("not a valid URL"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let zero = PostgresOptions {
            pool_size: 0,
            ..PostgresOptions::default()
        };
        assert!(refused("postgres://db/rm", &zero).contains("pool size"));
        for bad in ["Public", "1st", "a-b", "a;drop", "", &"a".repeat(64)] {
            let named = PostgresOptions {
                schema: Some(bad.to_owned()),
                ..PostgresOptions::default()
            };
            let e = refused("postgres://db/rm", &named);
            assert!(e.contains("not a plain identifier"), "{bad}: {e}");
        }
    }

    #[test]
    fn both_schemes_and_every_sslmode_are_accepted() {
        let options = PostgresOptions {
            schema: Some("rm_test_1".into()),
            ..PostgresOptions::default()
        };
        for scheme in ["postgres", "postgresql"] {
            for mode in [
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ] {
                let url = format!("{scheme}://rm:pw@db.example:6432/rm?sslmode={mode}");
                let target = Target::parse(&url, &options).unwrap();
                assert_eq!(target.connect_options.get_host(), "db.example");
                assert_eq!(target.connect_options.get_port(), 6432);
                assert_eq!(target.connect_options.get_database(), Some("rm"));
                assert_eq!(
                    target.connect_options.get_options(),
                    Some("-c search_path=rm_test_1")
                );
            }
        }
    }

    #[test]
    fn require_with_a_ca_checks_the_certificate_as_libpq_does() {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let options = PostgresOptions::default();
        let with_ca = format!("postgres://db/rm?sslmode=require&sslrootcert={ca}");
        let target = Target::parse(&with_ca, &options).unwrap();
        assert!(matches!(
            target.connect_options.get_ssl_mode(),
            PgSslMode::VerifyCa
        ));
        let target = Target::parse("postgres://db/rm?sslmode=require", &options).unwrap();
        assert!(matches!(
            target.connect_options.get_ssl_mode(),
            PgSslMode::Require
        ));
    }
}
