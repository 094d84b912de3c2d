//! Syntax rules for the strings that reach a build: package names, unit
//! names, paths, user names… Shared by recipe validation and by the check of
//! every step a plugin emits, so a plugin cannot do what a recipe may not.
//!
//! Each rule returns `Err(reason)`; the caller adds the field path and code.

/// Where files may be written in an image.
pub const ALLOWED_PATH_PREFIXES: &[&str] = &[
    "/etc/",
    "/usr/local/",
    "/opt/",
    "/srv/",
    "/var/lib/",
    "/home/",
];

/// Files nobody may write through a recipe or a plugin: they would lock users
/// out or bypass the typed steps that own them.
const PROTECTED_PATHS: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/fstab",
];

/// Longest string a rule accepts, so hostile input stays bounded.
pub const MAX_NAME_LEN: usize = 128;

fn bounded(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > max {
        return Err(format!("is {} bytes long; the limit is {max}", value.len()));
    }
    Ok(())
}

fn shell_like(value: &str) -> Option<char> {
    value.chars().find(|c| {
        matches!(
            c,
            ';' | '&'
                | '|'
                | '$'
                | '`'
                | '<'
                | '>'
                | '('
                | ')'
                | '{'
                | '}'
                | '\\'
                | '"'
                | '\''
                | '*'
                | '?'
                | '!'
                | '~'
                | '#'
        ) || c.is_whitespace()
            || c.is_control()
    })
}

fn describe_char(c: char) -> String {
    if c.is_whitespace() || c.is_control() {
        format!("{:?}", c)
    } else {
        format!("`{c}`")
    }
}

/// Debian policy §5.6.7: lowercase letters, digits, `+ - .`, at least two
/// characters, starting with a letter or digit.
pub fn package_name(name: &str) -> Result<(), String> {
    bounded(name, MAX_NAME_LEN)?;
    if name.len() < 2 {
        return Err("is too short: Debian package names have at least two characters".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit (Debian policy)".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')))
    {
        return Err(format!(
            "contains {}; Debian package names use only lowercase letters, digits, `+`, `-` and `.`",
            describe_char(c)
        ));
    }
    Ok(())
}

/// A systemd unit name: `name.service`, `name@instance.timer`… A name without
/// a suffix means `.service`.
pub fn unit_name(name: &str) -> Result<(), String> {
    bounded(name, 255)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@' | '\\')))
    {
        return Err(format!(
            "contains {}; unit names use letters, digits and `: - _ . @`",
            describe_char(c)
        ));
    }
    if name.contains('\\') {
        return Err("contains `\\`; escaped unit names are not accepted".into());
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must start with a letter or digit".into());
    }
    const SUFFIXES: &[&str] = &[
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".path",
        ".mount",
        ".automount",
        ".swap",
        ".slice",
    ];
    if let Some(dot) = name.rfind('.') {
        let suffix = &name[dot..];
        if !SUFFIXES.contains(&suffix)
            && !name[..dot].contains('@')
            && suffix.len() > 1
            && suffix[1..].chars().all(|c| c.is_ascii_alphabetic())
        {
            return Err(format!(
                "has the unknown unit type `{suffix}`; use one of {}",
                SUFFIXES.join(", ")
            ));
        }
    }
    Ok(())
}

/// An absolute, normalised path under one of [`ALLOWED_PATH_PREFIXES`].
pub fn image_path(path: &str) -> Result<(), String> {
    bounded(path, 4096)?;
    if !path.starts_with('/') {
        return Err("must be an absolute path (start with `/`)".into());
    }
    if path.ends_with('/') {
        return Err("names a directory; give a file path".into());
    }
    if path
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be normalised: no `..`, `.` or empty components".into());
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains the control character {}",
            describe_char(c)
        ));
    }
    if !ALLOWED_PATH_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return Err(format!(
            "is outside the directories an image may be customised in ({})",
            ALLOWED_PATH_PREFIXES.join(", ")
        ));
    }
    if PROTECTED_PATHS.contains(&path) {
        return Err("is managed by OpenFactory's typed steps; use `users` and features instead of writing it".into());
    }
    Ok(())
}

/// A POSIX user or group name as Debian's `adduser` accepts by default.
pub fn account_name(name: &str) -> Result<(), String> {
    bounded(name, 32)?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        return Err("must start with a lowercase letter or `_`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
    {
        return Err(format!(
            "contains {}; use lowercase letters, digits, `_` and `-`",
            describe_char(c)
        ));
    }
    Ok(())
}

/// An RFC 1123 host name label (no dots: the image's short host name).
pub fn hostname(name: &str) -> Result<(), String> {
    bounded(name, 63)?;
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with `-`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "contains {}; host names use letters, digits and `-`",
            describe_char(c)
        ));
    }
    Ok(())
}

/// A recipe or feature name: lowercase `a-z0-9-`, starting with a letter or digit.
pub fn slug(name: &str) -> Result<(), String> {
    bounded(name, 64)?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {}; use lowercase letters, digits and `-`",
            describe_char(c)
        ));
    }
    Ok(())
}

/// A kernel command-line argument: `key` or `key=value`, no quoting, no spaces.
pub fn kernel_arg(arg: &str) -> Result<(), String> {
    bounded(arg, 256)?;
    if let Some(c) = arg.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ',' | ':' | '/' | '=' | '+'))
    }) {
        return Err(format!(
            "contains {}; one argument per entry, without quotes or spaces",
            describe_char(c)
        ));
    }
    Ok(())
}

/// A sysctl key such as `net.ipv4.ip_forward`.
pub fn sysctl_key(key: &str) -> Result<(), String> {
    bounded(key, 128)?;
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    {
        return Err(format!(
            "contains {}; sysctl keys use letters, digits and `_ - . /`",
            describe_char(c)
        ));
    }
    if key.contains("..") || key.starts_with('.') || key.starts_with('/') {
        return Err("is not a sysctl key".into());
    }
    Ok(())
}

/// A sysctl value: one line of printable text.
pub fn sysctl_value(value: &str) -> Result<(), String> {
    bounded(value, 256)?;
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!(
            "contains the control character {}",
            describe_char(c)
        ));
    }
    Ok(())
}

/// A timezone from the tz database, such as `Europe/Paris` or `UTC`.
pub fn timezone(tz: &str) -> Result<(), String> {
    bounded(tz, 64)?;
    if tz
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
        || tz.starts_with('/')
    {
        return Err("is not a tz database name like `Europe/Paris`".into());
    }
    if let Some(c) = tz
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+')))
    {
        return Err(format!(
            "contains {}; use a tz database name like `Europe/Paris`",
            describe_char(c)
        ));
    }
    Ok(())
}

/// A glibc locale such as `en_US.UTF-8` or `C.UTF-8`.
pub fn locale(locale: &str) -> Result<(), String> {
    bounded(locale, 64)?;
    if let Some(c) = locale
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')))
    {
        return Err(format!(
            "contains {}; use a locale like `en_US.UTF-8`",
            describe_char(c)
        ));
    }
    if !locale.contains('.') {
        return Err("names no character set; use a UTF-8 locale like `en_US.UTF-8`".into());
    }
    Ok(())
}

/// One OpenSSH public key line: `type base64 [comment]`.
pub fn ssh_public_key(key: &str) -> Result<(), String> {
    bounded(key, 16 * 1024)?;
    if key.contains(['\n', '\r', '\0']) {
        return Err("must be a single line".into());
    }
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut parts = key.split_whitespace();
    let kind = parts.next().unwrap_or("");
    if !TYPES.contains(&kind) {
        return Err(format!(
            "starts with `{}`; an OpenSSH public key starts with one of {}",
            truncate(kind, 40),
            TYPES.join(", ")
        ));
    }
    let body = parts.next().unwrap_or("");
    if body.len() < 16
        || !body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
    {
        return Err("has no base64 key material after the key type".into());
    }
    Ok(())
}

/// A crypt(3) password hash (`$6$…`, `$y$…`), never a clear-text password.
pub fn password_hash(hash: &str) -> Result<(), String> {
    bounded(hash, 512)?;
    const PREFIXES: &[&str] = &["$y$", "$gy$", "$7$", "$6$", "$5$", "$2b$"];
    if !PREFIXES.iter().any(|p| hash.starts_with(p)) {
        return Err("is not a crypt(3) hash; give the output of `mkpasswd -m yescrypt` (starts with `$y$` or `$6$`), never a clear-text password".into());
    }
    if let Some(c) = hash
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '$' | '.' | '/' | '=')))
    {
        return Err(format!(
            "contains {}, which no crypt(3) hash has",
            describe_char(c)
        ));
    }
    Ok(())
}

/// An absolute path to an executable inside the image, used as a login shell.
pub fn shell_path(path: &str) -> Result<(), String> {
    bounded(path, 256)?;
    if !path.starts_with('/')
        || path
            .split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be an absolute, normalised path like `/bin/bash`".into());
    }
    if let Some(c) = shell_like(path) {
        return Err(format!("contains {}", describe_char(c)));
    }
    Ok(())
}

/// An apt repository URI: `http://` or `https://`, no spaces or quotes.
pub fn repository_uri(uri: &str) -> Result<(), String> {
    bounded(uri, 2048)?;
    if !(uri.starts_with("https://") || uri.starts_with("http://")) {
        return Err("must start with `https://` or `http://`".into());
    }
    if let Some(c) = uri.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '\\')
    }) {
        return Err(format!("contains {}", describe_char(c)));
    }
    Ok(())
}

/// A word in a deb822 field (suite, component, source name).
pub fn deb822_word(word: &str) -> Result<(), String> {
    bounded(word, MAX_NAME_LEN)?;
    if let Some(c) = word
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+')))
    {
        return Err(format!("contains {}", describe_char(c)));
    }
    if word.contains("..") {
        return Err("must not contain `..`".into());
    }
    Ok(())
}

/// A `run` step's argv: non-empty, no NUL, a plain or absolute program name.
pub fn command_argv(argv: &[String]) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("is empty; give the program and its arguments".into());
    };
    if argv.len() > 256 {
        return Err(format!("has {} arguments; the limit is 256", argv.len()));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err("contains a NUL byte".into());
    }
    if argv.iter().map(String::len).sum::<usize>() > 64 * 1024 {
        return Err("is longer than 64 KiB; ship large content as a file step".into());
    }
    bounded(program, 256)?;
    let plain = program
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    let absolute = program.starts_with('/') && shell_path(program).is_ok();
    if !(plain || absolute) || program.starts_with('.') {
        return Err(format!(
            "starts with the program `{}`, which is neither a plain command name nor an absolute path",
            truncate(program, 60)
        ));
    }
    Ok(())
}

/// At most `max` characters of `s`, with an ellipsis when cut: for echoing input safely.
/// What a JSON value is, in words for error messages: "a string", "null"…
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` made safe to show on a terminal or a page: every control character
/// (ESC, CR, LF, tab, C1) and every bidirectional override is written as a
/// visible escape (`\u{1b}`), so text from a plugin or a caller can neither
/// move the cursor, rewrite a line, nor hide part of itself; then at most
/// `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    let is_hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !s.chars().any(is_hidden) {
        return truncate(s, max);
    }
    let escaped: String = s
        .chars()
        .map(|c| {
            if is_hidden(c) {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect();
    truncate(&escaped, max)
}

/// A line of text for people (a step's or a check's description): at most
/// `max` characters, with no control or direction-changing characters that
/// could rewrite a terminal or hide text.
pub fn plain_text(value: &str, max: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if chars > max {
        return Err(format!("is {chars} characters long; the limit is {max}"));
    }
    if printable(value, max) != value {
        return Err(format!(
            "`{}` contains control or direction-changing characters; use plain text",
            printable(value, 80)
        ));
    }
    Ok(())
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_cannot_move_the_cursor_or_hide_itself() {
        let hostile = "ok\x1b[2K\rsigned by Debian\u{202e}gnp.exe\nnext";
        let shown = printable(hostile, 1000);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(!shown.contains('\u{202e}'));
        assert_eq!(
            shown,
            "ok\\u{1b}[2K\\u{d}signed by Debian\\u{202e}gnp.exe\\u{a}next"
        );
        assert_eq!(printable("plain", 3), "pla…");
    }

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in ["vim", "g++", "libc6", "python3.11", "docker.io", "0ad"] {
            assert!(package_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Vim",
            "vim;rm -rf /",
            "$(reboot)",
            "-vim",
            "vim htop",
            "pkg_name",
            "vim\n",
        ] {
            assert!(package_name(bad).is_err(), "{bad:?}");
        }
        assert!(
            package_name(&"a".repeat(10_000))
                .unwrap_err()
                .contains("limit")
        );
    }

    #[test]
    fn unit_names_reject_shell() {
        for ok in [
            "ssh.service",
            "docker",
            "getty@ttyS0.service",
            "fstrim.timer",
            "systemd-networkd",
        ] {
            assert!(unit_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ssh; reboot",
            "a|b",
            "`id`",
            "x y",
            "../etc",
            ".hidden",
            "foo.bogus",
        ] {
            assert!(unit_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn paths_stay_inside_allowed_prefixes() {
        for ok in [
            "/etc/motd",
            "/opt/app/config.yml",
            "/home/admin/.ssh/authorized_keys",
            "/srv/data/README",
        ] {
            assert!(image_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "etc/motd",
            "/etc/../root/x",
            "/boot/grub/grub.cfg",
            "/etc//x",
            "/etc/",
            "/etc/shadow",
            "/usr/bin/sudo",
            "/etc/./x",
            "/proc/self",
        ] {
            assert!(image_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn account_and_host_names() {
        assert!(account_name("admin").is_ok());
        assert!(account_name("Admin").is_err());
        assert!(account_name("a;b").is_err());
        assert!(hostname("web-01").is_ok());
        assert!(hostname("web_01").is_err());
        assert!(hostname("-web").is_err());
    }

    #[test]
    fn commands_and_kernel_args() {
        let argv = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(command_argv(&argv(&["sed", "-i", "s/a/b/", "/etc/x"])).is_ok());
        assert!(command_argv(&argv(&["/usr/sbin/aideinit", "--yes"])).is_ok());
        assert!(command_argv(&argv(&[])).is_err());
        assert!(command_argv(&argv(&["rm -rf /"])).is_err());
        assert!(command_argv(&argv(&["./x"])).is_err());
        assert!(kernel_arg("console=ttyS0,115200").is_ok());
        assert!(kernel_arg("quiet splash").is_err());
        assert!(kernel_arg("a\"b").is_err());
    }

    #[test]
    fn secrets_and_keys() {
        assert!(ssh_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk admin@example").is_ok());
        assert!(ssh_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk\nssh-rsa AAAA").is_err());
        assert!(ssh_public_key("hello world").is_err());
        assert!(password_hash("$6$salt$abcdefghijklmnop").is_ok());
        assert!(password_hash("hunter2").is_err());
        assert!(timezone("Europe/Paris").is_ok());
        assert!(timezone("../../etc/passwd").is_err());
        assert!(locale("en_US.UTF-8").is_ok());
        assert!(locale("en_US; reboot").is_err());
    }
}
