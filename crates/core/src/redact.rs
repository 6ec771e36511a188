//! Keeping secrets out of text meant for logs and screens.

/// Masks the password of `scheme://user:password@host…`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..authority_start],
            &userinfo[..colon],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_userinfo_passwords() {
        assert_eq!(redact_url("/srv/restic"), "/srv/restic");
        assert_eq!(redact_url("rest:http://h:1/"), "rest:http://h:1/");
        assert_eq!(redact_url("rest:http://bob@h/"), "rest:http://bob@h/");
        assert_eq!(
            redact_url("s3:https://s3.example/b/a@b"),
            "s3:https://s3.example/b/a@b"
        );
        assert_eq!(redact_url("rest:https://u:p@h/x"), "rest:https://u:***@h/x");
    }
}
