//! `memlab data`: checksum verification and the offline error.

use memlab_cli::data::{CORPORA, Corpus, DataFile, corpus, download, sha1_hex, verify};

const FIXTURE: Corpus = Corpus {
    name: "fixture",
    url: "http://127.0.0.1:9/fixture.zip",
    files: &[DataFile {
        path: "fixture/words.txt",
        // SHA-1 of "hello\n".
        sha1: Some("f572d396fae9206628714fb2ce00f72e94f2258f"),
        size: Some(6),
    }],
};

#[test]
fn sha1_matches_a_known_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abc");
    std::fs::write(&path, b"abc").unwrap();
    // FIPS 180-1, appendix A.
    assert_eq!(
        sha1_hex(&path).unwrap(),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
}

#[test]
fn verify_names_the_missing_truncated_or_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(&FIXTURE, dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("fixture/words.txt") && err.contains("missing"),
        "{err}"
    );

    std::fs::create_dir_all(dir.path().join("fixture")).unwrap();
    let file = dir.path().join("fixture/words.txt");
    std::fs::write(&file, b"hell").unwrap();
    let err = verify(&FIXTURE, dir.path()).unwrap_err().to_string();
    assert!(err.contains("4 bytes, expected 6"), "{err}");

    std::fs::write(&file, b"jello\n").unwrap();
    let err = verify(&FIXTURE, dir.path()).unwrap_err().to_string();
    assert!(err.contains("expected f572d396"), "{err}");

    std::fs::write(&file, b"hello\n").unwrap();
    assert_eq!(verify(&FIXTURE, dir.path()).unwrap(), vec![file.clone()]);
    // Already there and verified: nothing is fetched.
    assert_eq!(download(&FIXTURE, dir.path(), None).unwrap(), vec![file]);
}

#[test]
fn offline_download_says_where_to_put_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-mirror");
    let mirror = format!("file://{}", missing.display());
    let err = download(corpus("wikitext-2").unwrap(), dir.path(), Some(&mirror))
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not download"), "{err}");
    assert!(err.contains("offline"), "{err}");
    assert!(err.contains("wikitext-2/wiki.train.tokens"), "{err}");
    assert!(err.contains("memlab data verify wikitext-2"), "{err}");
    assert!(
        !dir.path().join("wikitext-2-v1.zip").exists(),
        "no partial archive left"
    );
}

/// The shared WikiText-2 splits are the published files: their SHA-1 is the
/// registry's (checks the registry's digests against independent data).
#[test]
fn registry_digests_match_the_shared_wikitext_2_files() {
    let Some(dir) = std::env::var_os("MEMLAB_DATA_DIR") else {
        eprintln!("skipped: set MEMLAB_DATA_DIR to the shared data directory");
        return;
    };
    let wt2 = CORPORA.iter().find(|c| c.name == "wikitext-2").unwrap();
    for (shared, registry) in [("wikitext-2-valid.txt", 1), ("wikitext-2-test.txt", 2)] {
        let path = std::path::Path::new(&dir).join(shared);
        if path.is_file() {
            assert_eq!(
                Some(sha1_hex(&path).unwrap().as_str()),
                wt2.files[registry].sha1
            );
        }
    }
    assert!(corpus("enwik9").is_err());
}
