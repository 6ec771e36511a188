//! The argument vector of every command: what each option becomes, and
//! that no user value can ever be read by restic as a flag.

use super::*;

fn args(command: &Command) -> Vec<String> {
    match command.args() {
        Ok(args) => args,
        Err(e) => panic!("{command:?}: {e}"),
    }
}

fn refused(command: &Command) -> &'static str {
    match command.args() {
        Err(ResticError::InvalidArgument { field, .. }) => field,
        other => panic!("{command:?} should be refused, got {other:?}"),
    }
}

#[test]
fn stdin_backups_name_the_file_and_run_the_program_after_the_separator() {
    let from_command = Command::BackupStdin {
        from: StdinFrom::Command(vec!["/usr/bin/env".into(), "-i".into(), "--".into()]),
        filename: "-db.sql".into(),
        tags: vec!["db".into()],
        host: None,
    };
    assert_eq!(
        args(&from_command),
        [
            "backup",
            "--stdin-from-command",
            "--stdin-filename=-db.sql",
            "--tag=db",
            "--json",
            "--",
            "/usr/bin/env",
            "-i",
            "--"
        ]
    );
    let piped = Command::BackupStdin {
        from: StdinFrom::Pipe,
        filename: "db.sql".into(),
        tags: vec![],
        host: None,
    };
    assert_eq!(
        args(&piped),
        ["backup", "--stdin", "--stdin-filename=db.sql", "--json"]
    );
    for filename in ["", "a/b", "..", "a\0b"] {
        let bad = Command::BackupStdin {
            from: StdinFrom::Pipe,
            filename: filename.into(),
            tags: vec![],
            host: None,
        };
        assert_eq!(refused(&bad), "filename", "{filename:?}");
    }
    for argv in [vec![], vec!["relative/hook".to_owned()]] {
        let bad = Command::BackupStdin {
            from: StdinFrom::Command(argv),
            filename: "db.sql".into(),
            tags: vec![],
            host: None,
        };
        assert_eq!(refused(&bad), "from");
    }
}

#[test]
fn backup_paths_that_look_like_flags_come_after_the_separator() {
    let command = Command::Backup {
        paths: vec!["--password-file=/etc/shadow".into(), "-r".into()],
        excludes: vec!["-x".into(), "*.tmp".into()],
        tags: vec!["--json".into()],
        host: Some("-h".into()),
        options: Default::default(),
    };
    let argv = args(&command);
    assert_eq!(
        argv,
        [
            "backup",
            "--exclude=-x",
            "--exclude=*.tmp",
            "--tag=--json",
            "--host=-h",
            "--json",
            "--",
            "--password-file=/etc/shadow",
            "-r",
        ]
    );
    let separator = argv.iter().position(|a| a == "--").unwrap_or(usize::MAX);
    let first_path = argv.iter().position(|a| a == "-r").unwrap_or(0);
    assert!(separator < first_path);
}

#[test]
fn backup_options_are_single_flag_value_elements() {
    let command = Command::Backup {
        paths: vec!["/srv".into()],
        excludes: vec![],
        tags: vec![],
        host: None,
        options: BackupOptions {
            iexcludes: vec!["*.JPG".into(), "-rf".into()],
            exclude_caches: true,
            exclude_if_present: vec![".nobackup".into(), "--help".into()],
            exclude_larger_than: Some("500M".into()),
            one_file_system: true,
            skip_if_unchanged: true,
        },
    };
    assert_eq!(
        args(&command),
        [
            "backup",
            "--iexclude=*.JPG",
            "--iexclude=-rf",
            "--exclude-caches",
            "--exclude-if-present=.nobackup",
            "--exclude-if-present=--help",
            "--exclude-larger-than=500M",
            "--one-file-system",
            "--skip-if-unchanged",
            "--json",
            "--",
            "/srv",
        ]
    );
    let with = |options: BackupOptions| Command::Backup {
        paths: vec!["/srv".into()],
        excludes: vec![],
        tags: vec![],
        host: None,
        options,
    };
    for (options, field) in [
        (
            BackupOptions {
                iexcludes: vec!["a\nb".into()],
                ..BackupOptions::default()
            },
            "iexcludes",
        ),
        (
            BackupOptions {
                iexcludes: vec![String::new()],
                ..BackupOptions::default()
            },
            "iexcludes",
        ),
        (
            BackupOptions {
                exclude_if_present: vec!["a/b".into()],
                ..BackupOptions::default()
            },
            "exclude_if_present",
        ),
        (
            BackupOptions {
                exclude_if_present: vec!["x\u{1b}[2K".into()],
                ..BackupOptions::default()
            },
            "exclude_if_present",
        ),
        (
            BackupOptions {
                exclude_larger_than: Some("--help".into()),
                ..BackupOptions::default()
            },
            "exclude_larger_than",
        ),
        (
            BackupOptions {
                exclude_larger_than: Some("5MB".into()),
                ..BackupOptions::default()
            },
            "exclude_larger_than",
        ),
    ] {
        assert_eq!(refused(&with(options.clone())), field, "{options:?}");
    }
    // Nothing set, nothing added.
    assert_eq!(
        args(&with(BackupOptions::default())),
        ["backup", "--json", "--", "/srv"]
    );
}

#[test]
fn restore_includes_are_literal_paths() {
    assert_eq!(literal_pattern("/srv/a[1].txt"), "/srv/a\\[1].txt");
    assert_eq!(literal_pattern("/x/*?.log"), "/x/\\*\\?.log");
    assert_eq!(literal_pattern("/plain/path"), "/plain/path");
    assert_eq!(literal_pattern("/back\\slash"), "/back\\\\slash");
}

#[test]
fn restore_and_ls_put_positionals_after_the_separator() {
    let restore = Command::Restore {
        snapshot_id: "0123abcd".into(),
        include: vec!["-etc".into()],
        target: "-t".into(),
        verify: false,
    };
    assert_eq!(
        args(&restore),
        [
            "restore",
            "--target=-t",
            "--include=-etc",
            "--json",
            "--",
            "0123abcd"
        ]
    );
    let ls = Command::Ls {
        snapshot_id: "0123abcd".into(),
        path: "--help".into(),
    };
    assert_eq!(args(&ls), ["ls", "--json", "--", "0123abcd", "--help"]);
    let verified = Command::Restore {
        snapshot_id: "0123abcd".into(),
        include: vec!["/a".into()],
        target: "/t".into(),
        verify: true,
    };
    assert_eq!(
        args(&verified),
        [
            "restore",
            "--target=/t",
            "--verify",
            "--include=/a",
            "--json",
            "--",
            "0123abcd"
        ]
    );
}

#[test]
fn dump_puts_the_snapshot_and_path_after_the_separator_without_json() {
    let dump = Command::Dump {
        snapshot_id: "abcdef12".into(),
        path: "--help".into(),
        archive: Archive::Zip,
    };
    assert_eq!(
        args(&dump),
        ["dump", "--archive=zip", "--", "abcdef12", "--help"]
    );
    assert!(dump.reads_only());
    let bad = Command::Dump {
        snapshot_id: "latest".into(),
        path: "/".into(),
        archive: Archive::Tar,
    };
    assert_eq!(refused(&bad), "snapshot_id");
}

#[test]
fn a_recursive_listing_puts_its_dirs_after_the_separator() {
    let tree = Command::LsTree {
        snapshot_id: "0123abcd".into(),
        dirs: vec!["/home/alice".into(), "--help".into()],
    };
    assert_eq!(
        args(&tree),
        [
            "ls",
            "--json",
            "--recursive",
            "--",
            "0123abcd",
            "/home/alice",
            "--help"
        ]
    );
    let bad = Command::LsTree {
        snapshot_id: "../../x".into(),
        dirs: vec![],
    };
    assert_eq!(refused(&bad), "snapshot_id");
}

#[test]
fn snapshot_ids_must_be_hex() {
    for bad in ["latest", "-r", "0123abc", "0123abcg", &"a".repeat(65), ""] {
        let ls = Command::Ls {
            snapshot_id: bad.into(),
            path: "/".into(),
        };
        assert_eq!(refused(&ls), "snapshot_id", "{bad:?}");
        let restore = Command::Restore {
            snapshot_id: bad.into(),
            include: vec![],
            target: "/tmp/x".into(),
            verify: false,
        };
        assert_eq!(refused(&restore), "snapshot_id", "{bad:?}");
    }
    let full = "a".repeat(64);
    assert!(Command::Ls {
        snapshot_id: full,
        path: "/".into()
    }
    .args()
    .is_ok());
}

#[test]
fn forget_needs_a_rule_and_never_prunes() {
    assert_eq!(
        refused(&Command::Forget {
            policy: RetentionPolicy::default(),
            host: None
        }),
        "policy"
    );
    assert_eq!(
        refused(&Command::Forget {
            policy: RetentionPolicy::keep_last(0),
            host: None
        }),
        "policy"
    );
    let policy = RetentionPolicy {
        keep_daily: Some(7),
        keep_within: Some("1y6m".into()),
        ..RetentionPolicy::keep_last(3)
    };
    let argv = args(&Command::Forget {
        policy,
        host: Some("web1".into()),
    });
    assert_eq!(
        argv,
        [
            "forget",
            "--keep-last=3",
            "--keep-daily=7",
            "--keep-within=1y6m",
            "--host=web1",
            "--json"
        ]
    );
    assert!(!argv.iter().any(|a| a.contains("prune")));
    for bad in ["", "7", "d", "7x", "-1d", "7d "] {
        let policy = RetentionPolicy {
            keep_within: Some(bad.into()),
            ..RetentionPolicy::default()
        };
        assert_eq!(
            refused(&Command::Forget { policy, host: None }),
            "policy",
            "{bad:?}"
        );
    }
}

#[test]
fn other_commands() {
    assert_eq!(args(&Command::Init), ["init", "--json"]);
    assert_eq!(args(&Command::Unlock), ["unlock", "--json"]);
    assert_eq!(args(&Command::Prune), ["prune", "--json"]);
    assert_eq!(args(&Command::CatConfig), ["cat", "config", "--json"]);
    assert_eq!(args(&Command::ListLocks), ["list", "locks", "--json"]);
    assert_eq!(
        args(&Command::Stats {
            mode: StatsMode::RawData
        }),
        ["stats", "--mode=raw-data", "--json"]
    );
    assert_eq!(
        args(&Command::Snapshots {
            host: Some("h".into())
        }),
        ["snapshots", "--host=h", "--json"]
    );
    assert_eq!(
        args(&Command::Check {
            read_data_subset: Some("10%".into())
        }),
        ["check", "--read-data-subset=10%", "--json"]
    );
    assert_eq!(
        refused(&Command::Check {
            read_data_subset: Some("--remove-all".into())
        }),
        "read_data_subset"
    );
}

#[test]
fn copy_names_the_source_by_descriptor_and_puts_ids_after_the_separator() {
    let from = Repository::new("rest:http://u:secret@h:8000/primary", "source-pw");
    let copy = Command::Copy {
        from: from.clone(),
        host: Some("web-1".into()),
        tags: vec!["daily".into(), "-x".into()],
        snapshot_ids: vec!["0123abcd".into()],
    };
    let argv = args(&copy);
    assert_eq!(
        argv,
        [
            "copy",
            "--from-repository-file=/dev/fd/6",
            "--from-password-file=/dev/fd/5",
            "--host=web-1",
            "--tag=daily,-x",
            "--json",
            "--",
            "0123abcd",
        ]
    );
    assert!(!argv
        .iter()
        .any(|a| a.contains("secret") || a.contains("source-pw")));
    let all = Command::Copy {
        from: from.clone(),
        host: Some("web-1".into()),
        tags: vec![],
        snapshot_ids: vec![],
    };
    assert_eq!(
        args(&all),
        [
            "copy",
            "--from-repository-file=/dev/fd/6",
            "--from-password-file=/dev/fd/5",
            "--host=web-1",
            "--json",
            "--"
        ]
    );
    for (tags, ids, field) in [
        (vec!["a,b"], vec![], "tags"),
        (vec![], vec!["latest"], "snapshot_id"),
        (vec![], vec!["--host=x"], "snapshot_id"),
    ] {
        let bad = Command::Copy {
            from: from.clone(),
            host: None,
            tags: tags.into_iter().map(String::from).collect(),
            snapshot_ids: ids.into_iter().map(String::from).collect(),
        };
        assert_eq!(refused(&bad), field);
    }
    assert_eq!(
        args(&Command::InitFrom { from }),
        [
            "init",
            "--copy-chunker-params",
            "--from-repository-file=/dev/fd/6",
            "--from-password-file=/dev/fd/5",
            "--json"
        ]
    );
}

#[test]
fn refuses_empty_and_nul_values() {
    let backup = |paths: Vec<&str>, tags: Vec<&str>| Command::Backup {
        paths: paths.into_iter().map(String::from).collect(),
        excludes: vec![],
        tags: tags.into_iter().map(String::from).collect(),
        host: None,
        options: Default::default(),
    };
    assert_eq!(refused(&backup(vec![], vec![])), "paths");
    assert_eq!(refused(&backup(vec![""], vec![])), "paths");
    assert_eq!(refused(&backup(vec!["a\0b"], vec![])), "paths");
    assert_eq!(refused(&backup(vec!["/a"], vec!["a,b"])), "tags");
    assert_eq!(
        refused(&Command::Snapshots {
            host: Some(String::new())
        }),
        "host"
    );
}
