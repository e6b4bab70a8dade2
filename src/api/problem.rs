//! The API's error answers in its OpenAPI document. The errors themselves are the one
//! `AppError` (its response is an RFC 9457 problem document: `crate::error::Problem`).

/// Reusable error answers of the OpenAPI document: every operation refers to these
/// instead of repeating them.
pub mod responses {
    use crate::error::Problem;

    macro_rules! problem_response {
        ($name:ident, $description:literal) => {
            #[doc = $description]
            #[derive(utoipa::ToResponse)]
            #[response(description = $description, content_type = "application/problem+json")]
            #[expect(dead_code, reason = "describes an answer for the OpenAPI document")]
            pub struct $name(Problem);
        };
    }

    problem_response!(Malformed, "Malformed JSON: `line` and `column` say where");
    problem_response!(Unauthorized, "No key, or a wrong or revoked one");
    problem_response!(
        NotFound,
        "Not in this key's workspace (or not visible to a `send` key)"
    );
    problem_response!(Conflict, "Conflicts with the current state");
    problem_response!(TooLarge, "The body is over the size limit");
    problem_response!(Invalid, "Invalid fields, each named in `errors`");
    problem_response!(RateLimited, "Over the key's rate limit; see Retry-After");
}
