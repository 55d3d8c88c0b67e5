//! Dev helper: run an upstream for manual poking (`cargo run -p vaultd-tests --example serve`).
fn main() {
    let up = vaultd_tests::upstream::Upstream::start(vaultd_tests::upstream::TlsKind::Good);
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/tmp".into()));
    vaultd_tests::pki::Pki::get().write_ca_pem(&dir);
    println!("{}", up.url());
    std::thread::sleep(std::time::Duration::from_secs(600));
}
