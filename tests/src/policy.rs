//! The policy most end-to-end tests apply, so that each test states only what
//! it is about (its rules, a service setting) instead of a page of TOML.

use crate::env::VaultEnv;

/// Service `up` at `upstream_url` + `/api`: a bearer credential from secret
/// `tok`, trusted through the test CA (`env.ca_file()`), allowed on the private
/// network (the upstream is on 127.0.0.1), plus the lines `service_extra`
/// (e.g. `timeout = "2s"`). Agent `a`. Capability `capability` on `up`,
/// granted to `a`, with the lines `rules` (`allow = [...]`, `deny = [...]`, ...).
pub fn one_service(
    env: &VaultEnv,
    upstream_url: &str,
    service_extra: &str,
    capability: &str,
    rules: &str,
) -> String {
    format!(
        r#"
[[service]]
name = "up"
base_url = "{upstream_url}/api"
auth = {{ type = "bearer", secret = "tok" }}
ca_file = "{ca}"
allow_private_network = true
{service_extra}

[[agent]]
name = "a"

[[capability]]
name = "{capability}"
service = "up"
agents = ["a"]
{rules}
"#,
        ca = env.ca_file().display()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pieces_land_in_their_tables() {
        let env = crate::VaultEnv::new();
        let p = super::one_service(
            &env,
            "https://127.0.0.1:1",
            r#"timeout = "2s""#,
            "echo",
            r#"allow = ["GET /v1/**"]"#,
        );
        assert!(p.contains("base_url = \"https://127.0.0.1:1/api\""), "{p}");
        assert!(p.contains("timeout = \"2s\"\n\n[[agent]]"), "{p}");
        assert!(p.contains("name = \"echo\""), "{p}");
    }
}
