//! TOTP (RFC 6238) secrets, codes and enrolment material, computed through `totp-rs`.
//!
//! Parameters are fixed at what every authenticator app supports: SHA-1, six digits, 30 s steps.
//! A code is accepted for the current step and one either side (RFC 6238 §5.2 network delay);
//! which step matched is returned so the store can refuse a second use of it.
//!
//! `totp_rs::TOTP` derives `Debug` and `Clone` over the raw seed, so it is only ever built inside
//! this module, wrapped in [`Scrubbed`] so the seed copy it holds is zeroed when it goes away.

use std::fmt;

use qrcode::render::svg;
use qrcode::QrCode;
use rand::rngs::OsRng;
use rand::RngCore;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::MfaError;

/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Digits in a code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
pub const SKEW: u8 = 1;
/// Bytes of a newly made seed: 160 bits, the RFC 4226 §4 recommendation.
pub const SECRET_BYTES: usize = 20;

/// A TOTP seed. Zeroed on drop; its Debug is redacted and it has no Display.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A new seed of [`SECRET_BYTES`] from the OS CSPRNG.
    pub fn generate() -> Secret {
        let mut bytes = vec![0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Secret(bytes)
    }

    /// Wrap seed bytes (opened from storage, or a test vector). Takes ownership so no extra
    /// copy is left behind.
    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The raw seed, for sealing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32 without padding, for people who type the key instead of scanning.
    pub fn base32(&self) -> String {
        Scrubbed::sha1(self).0.get_secret_base32()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A `TOTP` whose seed copy is zeroed on drop, whichever way the function using it returns.
struct Scrubbed(TOTP);

impl Scrubbed {
    fn sha1(secret: &Secret) -> Scrubbed {
        Scrubbed(TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            SKEW,
            STEP_SECONDS,
            secret.expose().to_vec(),
            None,
            String::new(),
        ))
    }
}

impl Drop for Scrubbed {
    fn drop(&mut self) {
        self.0.secret.zeroize();
    }
}

/// A syntactically valid code: exactly six ASCII digits. Redacted Debug, zeroed on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Code([u8; DIGITS]);

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

/// Accept exactly six ASCII digits and nothing else. No trimming, no removal of spaces, no
/// folding of full-width or other Unicode digits: whatever the user's software sent is what is
/// checked, so there is one spelling of each code and nothing for a normaliser to get wrong.
pub fn parse_code(input: &str) -> Option<Code> {
    let bytes = input.as_bytes();
    if bytes.len() != DIGITS || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut code = [0u8; DIGITS];
    code.copy_from_slice(bytes);
    Some(Code(code))
}

/// The time step (unix seconds / 30) whose code `code` is, within ±[`SKEW`] steps of `now_unix`.
/// Every candidate is computed and compared in constant time, so timing does not tell which step
/// matched. If two steps share a code (a one-in-a-million accident) the later one is returned,
/// which is the stricter choice for the replay check.
pub fn matching_step(secret: &Secret, code: &Code, now_unix: u64) -> Option<i64> {
    let totp = Scrubbed::sha1(secret);
    let current = now_unix / STEP_SECONDS;
    let mut found = None;
    for step in current.saturating_sub(u64::from(SKEW))..=current.saturating_add(u64::from(SKEW)) {
        let Some(time) = step.checked_mul(STEP_SECONDS) else {
            continue;
        };
        let mut expected = totp.0.generate(time);
        let hit: bool = expected.as_bytes().ct_eq(&code.0).into();
        expected.zeroize();
        if hit {
            found = i64::try_from(step).ok();
        }
    }
    found
}

/// What a user needs to add the account to an authenticator app. Shown once; holds the seed, so
/// it is zeroed on drop and its Debug is redacted.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Enrolment {
    secret: Secret,
    otpauth_uri: String,
    qr_svg: String,
}

impl Enrolment {
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// `otpauth://totp/<issuer>:<email>?secret=…&issuer=<issuer>` (contains the seed).
    pub fn otpauth_uri(&self) -> &str {
        &self.otpauth_uri
    }

    /// The URI as a QR code, a standalone SVG document (contains the seed).
    pub fn qr_svg(&self) -> &str {
        &self.qr_svg
    }

    /// The seed in base32, for manual entry.
    pub fn manual_key(&self) -> String {
        self.secret.base32()
    }
}

impl fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Enrolment(<redacted>)")
    }
}

/// Make a new seed and its otpauth URI and QR code. `issuer` and `email` appear in the user's
/// authenticator app; neither may contain `:` (the label separator of the otpauth format).
pub fn enrol(issuer: &str, email: &str) -> Result<Enrolment, MfaError> {
    // Checked here rather than by `TOTP::new`, whose error path drops its seed copy unzeroed.
    if issuer.contains(':') || email.contains(':') {
        return Err(MfaError::InvalidLabel);
    }
    let secret = Secret::generate();
    let mut totp = Scrubbed::sha1(&secret);
    totp.0.issuer = Some(issuer.to_owned());
    totp.0.account_name = email.to_owned();
    let otpauth_uri = totp.0.get_url();
    drop(totp);
    let qr_svg = QrCode::new(otpauth_uri.as_bytes())
        .map_err(|_| MfaError::InvalidLabel)?
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(Enrolment {
        secret,
        otpauth_uri,
        qr_svg,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 Appendix B: (time, SHA1, SHA256, SHA512), 8 digits, 30 s steps.
    const RFC6238: [(u64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1111111109, "07081804", "68084774", "25091201"),
        (1111111111, "14050471", "67062674", "99943326"),
        (1234567890, "89005924", "91819424", "93441116"),
        (2000000000, "69279037", "90698825", "38618901"),
        (20000000000, "65353130", "77737706", "47863826"),
    ];

    fn rfc_totp(algorithm: Algorithm, seed: &[u8]) -> TOTP {
        TOTP::new_unchecked(algorithm, 8, 1, 30, seed.to_vec(), None, String::new())
    }

    #[test]
    fn totp_rs_reproduces_rfc6238_appendix_b() {
        let sha1 = rfc_totp(Algorithm::SHA1, SEED_SHA1);
        let sha256 = rfc_totp(Algorithm::SHA256, SEED_SHA256);
        let sha512 = rfc_totp(Algorithm::SHA512, SEED_SHA512);
        for (time, want1, want256, want512) in RFC6238 {
            assert_eq!(sha1.generate(time), want1, "SHA1 at {time}");
            assert_eq!(sha256.generate(time), want256, "SHA256 at {time}");
            assert_eq!(sha512.generate(time), want512, "SHA512 at {time}");
        }
    }

    #[test]
    fn matching_step_finds_the_rfc_sha1_codes_truncated_to_six_digits() {
        // The six-digit code is the same dynamic-truncation number mod 10^6, i.e. the last six
        // digits of the eight-digit vector; this runs the product's own verification path.
        let secret = Secret::from_bytes(SEED_SHA1.to_vec());
        for (time, want1, _, _) in RFC6238 {
            let code = parse_code(&want1[2..]).unwrap();
            let step = i64::try_from(time / 30).unwrap();
            assert_eq!(matching_step(&secret, &code, time), Some(step), "at {time}");
            // One step of clock drift either way is tolerated and still names the code's step.
            assert_eq!(matching_step(&secret, &code, time + 30), Some(step));
            assert_eq!(
                matching_step(&secret, &code, time.saturating_sub(30)),
                Some(step)
            );
            // Two steps away is not.
            assert_eq!(matching_step(&secret, &code, time + 60), None, "at {time}");
        }
    }

    #[test]
    fn a_wrong_code_matches_nothing() {
        let secret = Secret::from_bytes(SEED_SHA1.to_vec());
        // 287082 is right at t=59; 287083 is not (nor at the neighbouring steps, checked).
        assert!(matching_step(&secret, &parse_code("287083").unwrap(), 59).is_none());
        assert!(matching_step(&secret, &parse_code("287082").unwrap(), 0).is_some());
    }

    #[test]
    fn codes_are_exactly_six_ascii_digits_never_normalised() {
        let table: &[(&str, bool)] = &[
            ("123456", true),
            ("000000", true),
            ("999999", true),
            ("12345", false),
            ("1234567", false),
            ("", false),
            (" 123456", false),
            ("123456 ", false),
            ("123 456", false),
            ("123456\n", false),
            ("\t123456", false),
            ("+12345", false),
            ("-12345", false),
            ("+123456", false),
            ("12345a", false),
            ("abcdef", false),
            ("１２３４５６", false), // full-width digits
            ("١٢٣٤٥٦", false),       // Arabic-Indic digits
            ("12345６", false),
            ("123-456", false),
            ("0x1234", false),
            ("12.345", false),
            ("123\u{0}56", false),
        ];
        for (input, ok) in table {
            assert_eq!(parse_code(input).is_some(), *ok, "{input:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_code_accepts_exactly_six_ascii_digits(s in "\\PC{0,10}") {
            let six_digits = s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit());
            proptest::prop_assert_eq!(parse_code(&s).is_some(), six_digits);
        }
    }

    #[test]
    fn enrolment_makes_a_20_byte_seed_uri_and_svg() {
        let e = enrol("Delivery Zone", "ada@example.com").unwrap();
        assert_eq!(e.secret().expose().len(), SECRET_BYTES);
        let uri = e.otpauth_uri();
        assert!(
            uri.starts_with("otpauth://totp/Delivery%20Zone:ada%40example.com?"),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={}", e.manual_key())), "{uri}");
        assert!(uri.contains("issuer=Delivery%20Zone"), "{uri}");
        // The URI round-trips through totp-rs to the same seed and parameters.
        let parsed = TOTP::from_url(uri).unwrap();
        assert_eq!(parsed.secret, e.secret().expose());
        assert_eq!((parsed.digits, parsed.step), (6, 30));
        assert_eq!(parsed.algorithm, Algorithm::SHA1);
        assert!(e.qr_svg().contains("<svg"));
        assert!(e.qr_svg().ends_with("</svg>"));
        // Two enrolments never share a seed.
        let other = enrol("Delivery Zone", "ada@example.com").unwrap();
        assert_ne!(other.secret().expose(), e.secret().expose());
    }

    #[test]
    fn a_colon_in_issuer_or_email_is_refused() {
        assert!(matches!(
            enrol("Evil:Corp", "ada@example.com"),
            Err(MfaError::InvalidLabel)
        ));
        assert!(matches!(
            enrol("Delivery Zone", "a:b@example.com"),
            Err(MfaError::InvalidLabel)
        ));
    }

    #[test]
    fn debug_never_shows_the_seed_or_a_code() {
        let e = enrol("Delivery Zone", "ada@example.com").unwrap();
        let printed = format!("{e:?} {:?} {:?}", e.secret(), parse_code("123456").unwrap());
        assert!(!printed.contains(&e.manual_key()));
        assert!(!printed.contains("123456"));
        assert!(printed.contains("<redacted>"));
    }
}
