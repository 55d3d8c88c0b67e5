//! The sealed vault file on hostile bytes: `vault::parse_header` and
//! `vault::open` never panic, and no change to a genuine sealed file, even
//! with its checksum fixed up, ever opens.
//!
//! Input: one flags byte, then
//! - bit 0 set ("raw"): the rest is the whole file;
//! - bit 0 clear ("mutate"): the rest is a list of 3-byte edits
//!   (offset u16 LE, xor u8) applied to a small vault sealed once per process
//!   (8 MiB / 1 pass argon2id), offsets taken modulo its length;
//! - bit 1: truncate the file to `offset` given by the first edit (mutate);
//! - bit 2: fix up the trailing SHA-256, so the edit reaches the header
//!   checks and the AEADs instead of stopping at the checksum.
//!
//! argon2 runs with the parameters in the file's header, so `open` is only
//! called when `parse_header` accepts parameters no costlier than the
//! sealed file's own (8 MiB, 1 pass, 1 lane); otherwise only `parse_header`
//! runs. When an edited file keeps the genuine header bytes 0..128 (salt,
//! KDF parameters and wrapped key untouched), `open` would derive the same
//! key-encryption key and unwrap the same data key, so the target calls
//! `open_body` with that data key directly: the same code path minus argon2,
//! which keeps body edits fast. Edits that touch the header take the full
//! `open` with the passphrase.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vaultd::error::Error;
use vaultd::policy::{Auth, Capability, Service, StoredPolicy};
use vaultd::secret::SecretBuf;
use vaultd::vault::{self, AgentRecord, KdfParams, VaultData};

const PASSPHRASE: &[u8] = b"correct horse battery staple";
const KDF: KdfParams = KdfParams {
    memory_kib: 8 * 1024,
    iterations: 1,
    parallelism: 1,
};
const HEADER_LEN: usize = 128;

struct Sealed {
    file: Vec<u8>,
    data_key: SecretBuf,
}

fn sealed() -> &'static Sealed {
    static SEALED: OnceLock<Sealed> = OnceLock::new();
    SEALED.get_or_init(|| {
        let (header, data_key) = vault::create(PASSPHRASE, KDF).expect("create");
        let mut data = VaultData {
            generation: 3,
            ..Default::default()
        };
        data.secrets.insert(
            "github-token".into(),
            SecretBuf::copy_from(b"ghp_CANARYcanary0123456789").expect("secret"),
        );
        data.agents.insert(
            "claude-code".into(),
            AgentRecord {
                token_sha256: Some("ab".repeat(32)),
            },
        );
        data.policy = StoredPolicy {
            services: vec![Service {
                name: "github".into(),
                base_url: "https://api.github.com".into(),
                auth: Auth::Bearer {
                    secret: "github-token".into(),
                },
                timeout_ms: 30_000,
                max_response_bytes: 1 << 20,
                ca_file: None,
                ca_pem: None,
                allow_private_network: false,
            }],
            capabilities: vec![Capability {
                name: "issues-read".into(),
                service: "github".into(),
                agents: vec!["claude-code".into()],
                allow: vec!["GET /repos/*/*/issues".into()],
                deny: vec![],
                rate_limit: Some("60/min".into()),
                requires_reason: false,
            }],
        };
        let file = vault::seal(&header, &data_key, &data).expect("seal");
        let opened =
            vault::open(Path::new("vault.bin"), &file, PASSPHRASE).expect("the genuine file opens");
        assert_eq!(opened.data.generation, 3);
        Sealed { file, data_key }
    })
}

fn fix_checksum(file: &mut [u8]) {
    use sha2::Digest;
    if file.len() >= 32 {
        let end = file.len() - 32;
        let sum = sha2::Sha256::digest(&file[..end]);
        file[end..].copy_from_slice(&sum);
    }
}

/// Is argon2 with these parameters no costlier than the sealed file's own?
fn cheap(kdf: KdfParams) -> bool {
    kdf.memory_kib <= KDF.memory_kib
        && kdf.iterations <= KDF.iterations
        && kdf.parallelism <= KDF.parallelism
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let path = Path::new("vault.bin");
    let raw = flags & 1 != 0;
    let sealed = sealed();
    let mut file = if raw {
        rest.to_vec()
    } else {
        let mut file = sealed.file.clone();
        let edits: Vec<(usize, u8)> = rest
            .chunks_exact(3)
            .map(|c| (usize::from(u16::from_le_bytes([c[0], c[1]])), c[2]))
            .collect();
        for &(offset, xor) in &edits {
            let i = offset % file.len();
            file[i] ^= xor;
        }
        if flags & 2 != 0
            && let Some(&(offset, _)) = edits.first()
        {
            file.truncate(offset % (file.len() + 1));
        }
        file
    };
    if flags & 4 != 0 {
        fix_checksum(&mut file);
    }
    let mutated = !raw;
    if mutated && file == sealed.file {
        // The edits cancelled out (or only touched the checksum, now fixed up).
        return;
    }

    let header = match vault::parse_header(path, &file) {
        Ok(h) => h,
        Err(Error::Tampered { .. } | Error::BadFormat { .. }) => return,
        Err(e) => panic!("parse_header: unexpected error kind: {e}"),
    };
    assert!(
        file.len() >= 152 + 16 + 32,
        "parse_header accepted a {}-byte file",
        file.len()
    );
    if !cheap(header.kdf) {
        return;
    }

    let result = if mutated && file.get(..HEADER_LEN) == sealed.file.get(..HEADER_LEN) {
        // Same header => same KEK => same data key: `open` reduces to this.
        vault::open_body(path, &file, &sealed.data_key).map(|_| ())
    } else {
        vault::open(path, &file, PASSPHRASE).map(|_| ())
    };
    match result {
        Ok(()) => assert!(
            !mutated,
            "an edited vault file opened ({} bytes)",
            file.len()
        ),
        Err(Error::Tampered { .. } | Error::BadFormat { .. } | Error::WrongPassphrase) => {}
        Err(e) => panic!("open: unexpected error kind: {e}"),
    }
});
