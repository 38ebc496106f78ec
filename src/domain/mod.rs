//! Validated domain types with no HTTP or SQL in them. Past the edge of the
//! API, a `Username` is always valid.

use std::fmt;

use serde::{Deserialize, Serialize};

mod error;
pub use error::{Error, Result};

/// A user's id where a username is accepted: the canonical hyphenated
/// form only (36 characters), which no username may take.
pub fn user_id_in(raw: &str) -> Option<uuid::Uuid> {
    (raw.len() == 36).then(|| uuid::Uuid::try_parse(raw).ok()).flatten()
}

/// An ORCID iD (`0000-0002-1825-0097`): four groups of four digits, the
/// last character a digit or `X`, with its ISO 7064 11,2 check character
/// right. Empty means unset.
pub fn parse_orcid(raw: &str) -> Result<String, Error> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("https://orcid.org/").unwrap_or(raw);
    if raw.is_empty() {
        return Ok(String::new());
    }
    let bad =
        || Error::invalid("invalid_orcid", "orcid must be an ORCID iD such as 0000-0002-1825-0097").on_field("orcid");
    let groups: Vec<&str> = raw.split('-').collect();
    if groups.len() != 4 || groups.iter().any(|g| g.len() != 4) {
        return Err(bad());
    }
    let chars: Vec<char> = groups.concat().chars().collect();
    if !chars[..15].iter().all(char::is_ascii_digit) {
        return Err(bad());
    }
    let total = chars[..15].iter().fold(0u32, |t, c| (t + c.to_digit(10).unwrap_or(0)) * 2);
    let check = (12 - total % 11) % 11;
    let expected = if check == 10 { 'X' } else { char::from_digit(check, 10).unwrap_or('?') };
    if chars[15].to_ascii_uppercase() != expected {
        return Err(bad());
    }
    Ok(raw.to_ascii_uppercase())
}

/// A web page: an absolute `http` or `https` URL of at most 2,048
/// characters. Empty means unset.
pub fn parse_url(raw: &str) -> Result<String, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(String::new());
    }
    let ok = raw.len() <= 2048
        && (raw.starts_with("https://") || raw.starts_with("http://"))
        && raw.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Error::invalid("invalid_url", "url must be an http or https address").on_field("url"))
    }
}

/// The reserved name that means "the caller" wherever a username is accepted.
pub const ME: &str = "me";

/// Words that XNAT routes use where a username may also stand
/// (`/xapi/users/active/{u}` beside `/xapi/users/{u}/roles`, ...): no user
/// may be called so, or a route would mean two things.
pub const RESERVED_USERNAMES: [&str; 4] = ["active", "current", "profile", "profiles"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// 1 to 64 characters: ASCII letters, digits, `.`, `_`, `-`, starting with a
    /// letter or digit (XNAT logins). `me` is reserved (MLTE).
    pub fn parse(raw: &str) -> Result<Username, Error> {
        Username::check(raw).map_err(|e| e.on_field("username"))
    }

    fn check(raw: &str) -> Result<Username, Error> {
        let ok_len = (1..=64).contains(&raw.len());
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !(ok_len && first_ok && rest_ok) {
            return Err(Error::invalid(
                "invalid_username",
                "username must be 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit",
            ));
        }
        if raw.eq_ignore_ascii_case(ME) {
            return Err(Error::reserved("reserved_username", "'me' is reserved and can't be used as a username"));
        }
        if user_id_in(raw).is_some() {
            // Wherever a username is accepted, a user's id is too.
            return Err(Error::reserved("reserved_username", "a username cannot have the form of a user id (a UUID)"));
        }
        if RESERVED_USERNAMES.iter().any(|w| raw.eq_ignore_ascii_case(w)) || raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::reserved(
                "reserved_username",
                "this username is reserved (a word of the XNAT routes, or all digits like an XNAT user id)",
            ));
        }
        Ok(Username(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address: the form to show (as given, NFC-normalised) and the
/// one canonical key every comparison and uniqueness check uses (local part
/// lower-cased by Unicode's full case mapping, domain in IDNA ASCII form).
/// Never compared with PostgreSQL's `lower()`, which folds e.g. U+212A
/// KELVIN SIGN to `k` and `İ` to `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    display: String,
    key: String,
}

impl Serialize for Email {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display)
    }
}

impl Email {
    /// A pragmatic check (one `@`, a non-empty local part, a dotted or
    /// `localhost` domain that IDNA accepts, no spaces, at most 254 bytes),
    /// refusing invisible or compatibility characters: an address must read
    /// as what it is (no zero-width, bidi-override, private-use or
    /// unassigned characters; no character NFKC would change, such as
    /// U+212A KELVIN SIGN or full-width letters).
    pub fn parse(raw: &str) -> Result<Email, Error> {
        Email::check(raw).map_err(|e| e.on_field("email"))
    }

    fn check(raw: &str) -> Result<Email, Error> {
        use unicode_normalization::UnicodeNormalization;
        let err = || Error::invalid("invalid_email", "email must be a valid address such as name@example.org");
        let raw = raw.trim();
        if raw.len() < 3 || raw.len() > 254 || raw.chars().any(|c| c.is_whitespace() || !visible(c)) {
            return Err(err());
        }
        // Each character must be itself under NFKC: that refuses
        // compatibility forms (full-width letters, ligatures) and singletons
        // such as U+212A KELVIN SIGN, which even NFC turns into `K`.
        if raw.chars().any(|c| !std::iter::once(c).nfkc().eq(std::iter::once(c))) {
            return Err(err());
        }
        let display: String = raw.nfc().collect();
        let (local, domain) = display.split_once('@').ok_or_else(err)?;
        if local.is_empty()
            || local.len() > 64
            || domain.is_empty()
            || domain.contains('@')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || !(domain.contains('.') || domain.eq_ignore_ascii_case("localhost"))
            || display.contains(['<', '>', '"', ',', ';', '\\'])
        {
            return Err(err());
        }
        if !single_script(local) || !domain.split('.').all(single_script) {
            return Err(err());
        }
        let ascii_domain = idna::domain_to_ascii(domain).map_err(|_| err())?;
        if ascii_domain.is_empty() || ascii_domain.len() > 253 {
            return Err(err());
        }
        let key = format!("{}@{}", local.to_lowercase().nfc().collect::<String>(), ascii_domain.to_ascii_lowercase());
        Ok(Email { display, key })
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The canonical form: equal keys are the same address.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The key of a username or email as typed at a login or lookup: usernames
/// are ASCII, so an ASCII name folds by ASCII rules; anything else is looked
/// up as an email (`Email::key`) or not at all.
pub fn login_key(raw: &str) -> String {
    match Email::parse(raw) {
        Ok(e) if raw.contains('@') => e.key,
        _ if raw.is_ascii() => raw.to_ascii_lowercase(),
        // Neither a username (ASCII) nor an address this server accepts:
        // kept exactly as given (no folding or normalisation, which would
        // turn U+212A KELVIN SIGN into `k`), so it matches no account.
        _ => raw.to_string(),
    }
}

/// Whether `c` may appear in a name or an address: no control, format
/// (zero-width, bidi overrides), surrogate, private-use or unassigned
/// (including the non-characters U+FFFE and U+FFFF) code point, and no line
/// or paragraph separator.
pub fn visible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    let category = c.general_category();
    let invisible_category = matches!(
        category,
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::LineSeparator
            | G::ParagraphSeparator
    );
    // BRAILLE PATTERN BLANK renders as nothing too.
    !invisible_category && !default_ignorable(c) && c != '\u{2800}'
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt,
/// Unicode 15.1): characters that render as nothing, such as U+034F
/// COMBINING GRAPHEME JOINER, variation selectors and the Hangul fillers.
fn default_ignorable(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// Whether `part` (an email's local part or one domain label) is written in
/// one script, not counting Common and Inherited characters (digits,
/// punctuation, combining marks), and does not start with a combining mark:
/// `kаte` with a Cyrillic `а` is refused (UTS #39's single-script rule).
fn single_script(part: &str) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    use unicode_script::{Script, UnicodeScript};
    let starts_with_mark = part
        .chars()
        .next()
        .is_some_and(|c| matches!(c.general_category(), G::NonspacingMark | G::SpacingMark | G::EnclosingMark));
    if starts_with_mark {
        return false;
    }
    let mut seen: Option<Script> = None;
    for c in part.chars() {
        let script = c.script();
        if matches!(script, Script::Common | Script::Inherited) {
            continue;
        }
        match seen {
            None => seen = Some(script),
            Some(s) if s == script => {}
            Some(_) => return false,
        }
    }
    true
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// A person's name part: at most 128 characters, no control characters.
pub fn parse_name(field: &'static str, raw: &str) -> Result<String, Error> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > 128 || trimmed.chars().any(|c| !visible(c)) {
        return Err(Error::invalid(
            "invalid_name",
            format!("{field} must be at most 128 characters with no control, invisible or unassigned characters"),
        ));
    }
    Ok(trimmed.to_string())
}

/// A single "full name" field (MLTE's `full_name`, the data tracker's
/// `name`) as registrar's two: split at the first space.
pub fn split_full_name(full: &str) -> (String, String) {
    match full.trim().split_once(' ') {
        Some((first, last)) => (first.to_string(), last.trim().to_string()),
        None => (full.trim().to_string(), String::new()),
    }
}

/// Registrar's two name fields as one: joined by a space when both are set.
pub fn full_name(first: &str, last: &str) -> String {
    match (first.is_empty(), last.is_empty()) {
        (_, true) => first.to_string(),
        (true, false) => last.to_string(),
        (false, false) => format!("{first} {last}"),
    }
}

/// Named capabilities. Roles grant permissions. A permission implies
/// others (`implies`), one level deep as the data tracker defines them:
/// `ADMIN` everything; `USER_MANAGEMENT` and `DATA_EDIT` also `USER_ADD`
/// and `USER_SEARCH`; `DATA_MANAGEMENT` also `DATA_EDIT` and `OWNERS_READ`.
/// registrar enforces the user permissions itself; `DATA_*` and
/// `OWNERS_READ` belong to the data tracker, which reads them from
/// registrar (`GET /api/v1/user/me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Admin,
    UserManagement,
    UserAdd,
    UserSearch,
    DataEdit,
    DataManagement,
    OwnersRead,
    /// SCIM provisioning (`/scim/v2`): held only by a provisioning
    /// credential (an API key of scope `scim`), never by a role, and
    /// implied by nothing (an administrator's session is no directory).
    ScimProvisioning,
}

impl Permission {
    pub const ALL: [Permission; 7] = [
        Permission::Admin,
        Permission::UserManagement,
        Permission::UserAdd,
        Permission::UserSearch,
        Permission::DataEdit,
        Permission::DataManagement,
        Permission::OwnersRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Admin => "ADMIN",
            Permission::UserManagement => "USER_MANAGEMENT",
            Permission::UserAdd => "USER_ADD",
            Permission::UserSearch => "USER_SEARCH",
            Permission::DataEdit => "DATA_EDIT",
            Permission::DataManagement => "DATA_MANAGEMENT",
            Permission::OwnersRead => "OWNERS_READ",
            Permission::ScimProvisioning => "SCIM_PROVISIONING",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Permission::Admin => "Everything, including site configuration and other administrators",
            Permission::UserManagement => {
                "Create, edit, disable and delete other users; manage their roles, groups, sessions and API keys"
            }
            Permission::UserAdd => "Add users (without roles)",
            Permission::UserSearch => "List and search users",
            Permission::DataEdit => {
                "Data tracker: create, edit and delete the orders, datasets and collections one is an editor of"
            }
            Permission::DataManagement => "Data tracker: modify any order, dataset or project",
            Permission::OwnersRead => "Data tracker: read the owner information of every entity",
            Permission::ScimProvisioning => "SCIM provisioning at /scim/v2 (provisioning credentials only)",
        }
    }

    /// Whether holding `self` grants `wanted`.
    pub fn implies(self, wanted: Permission) -> bool {
        use Permission::*;
        self == wanted
            || match self {
                Admin => wanted != ScimProvisioning,
                UserManagement | DataEdit => matches!(wanted, UserAdd | UserSearch),
                DataManagement => matches!(wanted, DataEdit | OwnersRead),
                UserAdd | UserSearch | OwnersRead | ScimProvisioning => false,
            }
    }

    pub fn from_name(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A project id: 1-64 ASCII letters, digits, `_` or `-`, starting with a
/// letter or digit (XNAT project ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(raw: &str) -> Result<ProjectId, Error> {
        let ok = (1..=64).contains(&raw.len())
            && raw.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(Error::invalid(
                "invalid_project_id",
                "project id must be 1-64 characters: letters, digits, '_' or '-', starting with a letter or digit",
            )
            .on_field("id"));
        }
        Ok(ProjectId(raw.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group name: 1-128 ASCII letters, digits, `_`, `.` or `-`.
pub fn parse_group_name(raw: &str) -> Result<String, Error> {
    check_group_name(raw).map_err(|e| e.on_field("name"))
}

fn check_group_name(raw: &str) -> Result<String, Error> {
    let ok = (1..=128).contains(&raw.len())
        && raw.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let lower = raw.to_ascii_lowercase();
    if ok && Level::ALL.iter().any(|l| lower.ends_with(&format!("_{}", l.as_str()))) {
        // `{project}_owner` and its kind belong to projects: a plain group
        // so named would block the project (or pose as its level group).
        return Err(Error::invalid(
            "reserved_group_name",
            "names ending in _owner, _member or _collaborator are reserved for project groups",
        ));
    }
    if !ok {
        return Err(Error::invalid(
            "invalid_group_name",
            "group name must be 1-128 characters: letters, digits, '_', '.' or '-', starting with a letter or digit",
        ));
    }
    Ok(raw.to_string())
}

/// Free text such as a project name or description: bounded, no control
/// characters other than newlines and tabs.
pub fn parse_text(field: &'static str, raw: &str, max: usize) -> Result<String, Error> {
    let t = raw.trim();
    if t.chars().count() > max || t.chars().any(|c| !visible(c) && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(Error::invalid(
            "invalid_text",
            format!("{field} must be at most {max} characters with no control characters"),
        )
        .on_field(field));
    }
    Ok(t.to_string())
}

/// Access level of a user in a project, from most to least privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Owner,
    Member,
    Collaborator,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Owner, Level::Member, Level::Collaborator];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Owner => "owner",
            Level::Member => "member",
            Level::Collaborator => "collaborator",
        }
    }

    pub fn parse(raw: &str) -> Result<Level, Error> {
        Level::ALL.into_iter().find(|l| l.as_str().eq_ignore_ascii_case(raw)).ok_or_else(|| {
            Error::invalid("invalid_level", "level must be owner, member or collaborator").on_field("level")
        })
    }

    /// Higher is more access: owner 3, member 2, collaborator 1.
    pub fn rank(self) -> u8 {
        match self {
            Level::Owner => 3,
            Level::Member => 2,
            Level::Collaborator => 1,
        }
    }

    /// The group that carries this level in `project`: `{project}_{level}`.
    pub fn group(self, project: &str) -> String {
        format!("{project}_{}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["a", "alice", "Bob.Smith", "x_1-2", &"a".repeat(64)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "me", "ME", "-a", ".a", "a b", "a/b", "é", &"a".repeat(65), "a\0", "active", "Profiles", "4", "007"]
        {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "admin@localhost", "first.last+tag@example.org"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a@", "@b.c", "a@b", "a b@c.d", "a@b..c", "a@@b.c", "<a@b.c>"] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        // Invisible, compatibility and non-characters.
        for bad in [
            "\u{212A}im@kit.example",
            "k\u{200B}im@kit.example",
            "kim@kit.exam\u{202E}ple",
            "ｋim@kit.example",
            "kim\u{FFFF}@kit.example",
            "kim@kit\u{E000}.example",
            "ka\u{34F}te@example.org",
            "kate\u{FE0F}@example.org",
            "k\u{2800}ate@example.org",
            "\u{301}kate@example.org",
            "k\u{430}te@example.org",
            "kate@ex\u{430}mple.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        // One key per address; PostgreSQL's lower() collisions stay apart.
        assert_eq!(Email::parse("Kim@KIT.Example").unwrap().key(), "kim@kit.example");
        assert_ne!(Email::parse("\u{130}x@kit.example").unwrap().key(), Email::parse("ix@kit.example").unwrap().key());
        assert_eq!(Email::parse("a@bücher.example").unwrap().key(), "a@xn--bcher-kva.example");
        assert!(Email::parse("катя@пример.рф").is_ok(), "one script is fine");
        assert_eq!(login_key("\u{212A}ate"), "\u{212A}ate", "no folding into an ASCII name");
        assert_eq!(Email::parse("Kim@KIT.Example").unwrap().as_str(), "Kim@KIT.Example");
    }
}
