// `sqlx::migrate!` embeds ../migrations/backend at compile time; rebuild when
// a migration changes, which cargo would not notice on its own.
fn main() {
    println!("cargo:rerun-if-changed=../migrations/backend");
}
