//! Keeping secrets out of text meant for logs and screens.

/// Masks the password of `scheme://user:password@host…`.
///
/// A password pasted into a URL unencoded may itself hold `/`, `@` or `:`
/// (generated passwords often do), so the authority cannot be cut at the
/// first `/`. The user name is what comes before the first `:` (it holds no
/// `/` or `@`), and the password runs from there to the *last* `@`. When a
/// path also holds an `@` this masks more than the password, never less:
/// a URL shown too briefly is harmless, a password shown is not.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let Some(colon) = rest.find(':') else {
        return url.to_owned();
    };
    let user = &rest[..colon];
    if user.contains(['/', '@']) {
        // `host/path:x` or `user@host:port`: no password before the host.
        return url.to_owned();
    }
    match rest.rfind('@') {
        Some(at) if at > colon => format!("{}{user}:***{}", &url[..authority_start], &rest[at..]),
        // `host:port/…` without any userinfo.
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn redacts_only_userinfo_passwords() {
        assert_eq!(redact_url("/srv/restic"), "/srv/restic");
        assert_eq!(redact_url("rest:http://h:1/"), "rest:http://h:1/");
        assert_eq!(redact_url("rest:http://bob@h/"), "rest:http://bob@h/");
        assert_eq!(
            redact_url("rest:http://bob@h:8000/"),
            "rest:http://bob@h:8000/"
        );
        assert_eq!(
            redact_url("s3:https://s3.example/b/a@b"),
            "s3:https://s3.example/b/a@b"
        );
        assert_eq!(redact_url("rest:https://u:p@h/x"), "rest:https://u:***@h/x");
    }

    #[test]
    fn passwords_holding_url_punctuation_are_masked_whole() {
        assert_eq!(
            redact_url("rest:https://u:pa/ss@h:8000/x"),
            "rest:https://u:***@h:8000/x"
        );
        assert_eq!(
            redact_url("rest:https://u:p@ss@h/x"),
            "rest:https://u:***@h/x"
        );
        assert_eq!(
            redact_url("rest:https://u:p:a:s@h/x"),
            "rest:https://u:***@h/x"
        );
        assert_eq!(
            redact_url("rest:https://u:a/b@c:d/e@h/x"),
            "rest:https://u:***@h/x"
        );
        assert_eq!(redact_url("rest:https://u:@h/x"), "rest:https://u:***@h/x");
    }

    proptest! {
        /// Whatever the password holds, it never survives redaction, and
        /// the scheme, user and host are still there to read.
        #[test]
        fn no_password_survives(
            scheme in "(rest:)?https?",
            user in "[a-z][a-z0-9._-]{0,11}",
            password in "[ -~]{8,40}",
            host in "[a-z][a-z0-9-]{0,15}(\\.[a-z]{2,5})?(:[0-9]{1,5})?",
            path in "(/[a-zA-Z0-9._-]{0,10}){0,4}",
        ) {
            let url = format!("{scheme}://{user}:{password}@{host}{path}");
            prop_assume!(!format!("{scheme}://{user}:").contains(&password));
            let shown = redact_url(&url);
            prop_assert!(!shown.contains(&password), "{url} shown as {shown}");
            prop_assert_eq!(shown, format!("{scheme}://{user}:***@{host}{path}"));
        }

        /// URLs without a password are shown as they are.
        #[test]
        fn urls_without_a_password_are_unchanged(
            user in "([a-z][a-z0-9]{0,7}@)?",
            host in "[a-z][a-z0-9-]{0,15}(:[0-9]{1,5})?",
            path in "(/[a-zA-Z0-9._-]{0,10}){0,4}",
        ) {
            let url = format!("rest:https://{user}{host}{path}");
            prop_assert_eq!(redact_url(&url), url);
        }
    }
}
