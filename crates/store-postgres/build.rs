//! Build script: rebuilds the crate when a migration changes, because
//! `sqlx::migrate!` embeds the `migrations/` directory at compile time.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
