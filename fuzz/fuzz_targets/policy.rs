//! The policy parser on arbitrary UTF-8: `vaultd::policy::parse` (against a
//! vault holding a few secrets, agents and CA files) and `policy::ca_files`
//! never panic; every error names a line inside the file; and an accepted
//! policy, rendered the way `vaultctl policy show` renders it, parses again to
//! the same services, capabilities and agents.

#![no_main]

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vaultd::policy::{self, Context};

/// A real (self-signed, P-256) CA: `policy::parse` builds the TLS roots from
/// a `ca_file`, as vaultd does at unlock, and refuses one it cannot use.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBiTCCAS+gAwIBAgIUbwptWqBiy7cf2CGyQOJz/AP3iH8wCgYIKoZIzj0EAwIw\n\
GTEXMBUGA1UEAwwOdmF1bHRkIGZ1enogQ0EwIBcNMjYxMTI4MDAwMTM2WhgPMjEy\n\
NjExMDQwMDAxMzZaMBkxFzAVBgNVBAMMDnZhdWx0ZCBmdXp6IENBMFkwEwYHKoZI\n\
zj0CAQYIKoZIzj0DAQcDQgAE42iIh9c8fxgZI2Lq7E3X9jWKInCRGloX7XjNrvYK\n\
ZDffWCpC03NlDJhVuHMSQK0VMShJc1U9HxChmk0QI7w9WKNTMFEwHQYDVR0OBBYE\n\
FHC8Ix9i0z6rwKmJbGHhH3dboA6gMB8GA1UdIwQYMBaAFHC8Ix9i0z6rwKmJbGHh\n\
H3dboA6gMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgK8whviFS\n\
4/35lOBe3LJVEcqVaE+jrt/XjzhsIpvmeOwCIQC3RfCa9G1GjQy5f2r7rUkUYYfC\n\
1MZbEXlhdMC7hiwThQ==\n\
-----END CERTIFICATE-----\n";

fn ca_files() -> &'static HashMap<String, String> {
    static CAS: OnceLock<HashMap<String, String>> = OnceLock::new();
    CAS.get_or_init(|| {
        HashMap::from([
            ("/etc/vaultd/ca.pem".to_owned(), CA_PEM.to_owned()),
            ("/tmp/not-a-cert.pem".to_owned(), "hello".to_owned()),
        ])
    })
}

fn context() -> Context<'static> {
    Context {
        secrets: BTreeSet::from(["github-token", "api-key", "short", "basic-pw"]),
        agents: BTreeSet::from(["claude-code", "cursor"]),
        ca_files: ca_files(),
        secret_lens: [
            ("github-token", 40),
            ("api-key", 24),
            ("short", 4),
            ("basic-pw", 12),
        ]
        .into_iter()
        .collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    let ctx = context();

    let cas = policy::ca_files(text);
    if let Ok(paths) = &cas {
        for (_, line) in paths {
            assert!(
                (1..=lines).contains(line),
                "ca_file line {line} outside 1..={lines}"
            );
        }
    }
    let parsed = match policy::parse(text, &ctx) {
        Ok(parsed) => parsed,
        Err(errors) => {
            assert!(!errors.is_empty(), "refused with no error");
            for e in &errors {
                assert!(
                    e.line <= lines,
                    "error line {} past the end ({lines} lines): {}",
                    e.line,
                    e.message
                );
            }
            let _ = policy::format_errors("policy.toml", &errors);
            return;
        }
    };
    assert!(cas.is_ok(), "parse accepted a file ca_files refused");

    let agents: Vec<&str> = parsed.agents.iter().map(String::as_str).collect();
    let shown = policy::render(&parsed.policy, &agents);
    let again = match policy::parse(&shown, &ctx) {
        Ok(again) => again,
        Err(errors) => panic!(
            "rendered policy does not parse again:\n{}\n--- rendered:\n{shown}\n--- input:\n{text}",
            policy::format_errors("rendered", &errors)
        ),
    };
    let before = serde_json::to_value(&parsed.policy).expect("policy serializes");
    let after = serde_json::to_value(&again.policy).expect("policy serializes");
    assert_eq!(
        before, after,
        "render/parse changed the policy\n--- rendered:\n{shown}\n--- input:\n{text}"
    );
    assert_eq!(
        parsed.agents, again.agents,
        "render/parse changed the agents"
    );
    // Rendering is a fixed point.
    let again_agents: Vec<&str> = again.agents.iter().map(String::as_str).collect();
    assert_eq!(
        shown,
        policy::render(&again.policy, &again_agents),
        "render is not stable"
    );
});
