//! "Did you mean" suggestions for misspelt names.

/// The candidate closest to `name`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|&(distance, c)| distance <= limit && c != name)
        .min_by_key(|&(distance, c)| (distance, c))
        .map(|(_, c)| c)
}

/// Adds "did you mean" for a likely typo of one of `candidates`, or else a note listing them
/// all (`the losses are: mse, l1, ...`), to a diagnostic about the unknown `name`.
pub fn suggest<'a>(
    diagnostic: crate::diagnostics::Diagnostic,
    name: &str,
    kind: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> crate::diagnostics::Diagnostic {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    match did_you_mean(name, candidates.iter().copied()) {
        Some(guess) => diagnostic.with_help(format!("did you mean `{guess}`?")),
        None => diagnostic.with_note(format!("the {kind} are: {}", candidates.join(", "))),
    }
}
