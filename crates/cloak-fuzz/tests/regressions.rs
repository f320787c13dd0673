//! Replays every input that ever crashed or hung a fuzz target (`fuzz/regressions/<target>/`)
//! through the same target function, and checks that the seeds reach each parser's success
//! path, so the fuzz targets cannot silently stop exercising their parsers.

use std::path::PathBuf;

fn regressions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions")
}

#[test]
fn every_saved_crash_and_hang_is_handled() {
    let root = regressions();
    let mut replayed = 0;
    for (name, target) in cloak_fuzz::TARGETS {
        let dir = root.join(name);
        assert!(
            dir.is_dir(),
            "{} is missing (one folder per target)",
            dir.display()
        );
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n == "README.md" || n == ".gitkeep")
            {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            target(&data);
            replayed += 1;
        }
    }
    eprintln!("{replayed} saved inputs replayed");
}

#[test]
fn no_target_folder_is_unknown() {
    for f in std::fs::read_dir(regressions()).unwrap() {
        let f = f.unwrap();
        if !f.file_type().unwrap().is_dir() {
            continue;
        }
        let name = f.file_name().into_string().unwrap();
        assert!(
            cloak_fuzz::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/regressions/{name} belongs to no target of cloak_fuzz::TARGETS"
        );
    }
}

#[test]
fn seeds_pass_their_targets_and_reach_the_success_path() {
    let scratch = tempfile::tempdir().unwrap();
    let seeds = cloak_fuzz::seeds::all(scratch.path());
    for (name, target) in cloak_fuzz::TARGETS {
        for (_, seed, bytes) in seeds.iter().filter(|(t, _, _)| t == name) {
            eprintln!("seed {name}/{seed}");
            target(bytes);
        }
    }
    let get = |t: &str| {
        seeds
            .iter()
            .filter(|(n, _, _)| *n == t)
            .map(|(_, _, b)| b.as_slice())
            .collect::<Vec<_>>()
    };
    // The parsers accept what cloak's writers produce (the targets' happy paths).
    let keys = cloak_fuzz::keys_for_tests();
    assert!(cloak_crypt::jwe::unwrap(get("jwe")[0], keys)
        .unwrap()
        .is_some());
    assert!(cloak_crypt::pkcs7::unwrap(get("pkcs7")[0], keys)
        .unwrap()
        .is_some());
    let (_, records) = cloak_launcher::files::parse(get("files_index")[0]).unwrap();
    assert_eq!(records.len(), 2);
    let s: [u8; cloak_sgx::sigstruct::SIZE] = get("sigstruct")[0].try_into().unwrap();
    cloak_sgx::sigstruct::verify(&s, "seed").unwrap();
    let eifs = get("eif");
    assert!(!eifs.is_empty());
    for e in eifs {
        let p = scratch.path().join("seed.eif");
        std::fs::write(&p, &e[1..]).unwrap();
        cloak_nitro::eif::read(&p).unwrap();
    }
    let mut f =
        cloak_image::flatten::Flattener::new(cloak_image::flatten::ContentMode::HashOnly).unwrap();
    f.apply_layer("seed", get("flatten")[0]).unwrap();
    assert!(f.finish().get("/etc/passwd").is_some());
}
