//! Search over the log: what someone typed, turned into the queries of the two indexes
//! (words of subjects and texts; trigrams of addresses), and the matches marked in what
//! the history shows.

/// The longest search looked at, in characters.
pub const MAX_LEN: usize = 200;
/// A search answers at most this many messages, newest first.
pub const LIMIT: i64 = 100;
/// At most this many words count; more only slow the query down.
const MAX_TERMS: usize = 8;
/// A word being typed shorter than this starts too many words for PostgreSQL's GIN to
/// gather them all when another word can narrow the search instead.
const SHORT_PREFIX: usize = 4;

/// One thing every match contains.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    /// A word; `prefix` while it is still being typed (the last word, no space after it).
    Word { text: String, prefix: bool },
    /// Words in this order (typed in double quotes).
    Phrase(Vec<String>),
}

/// A parsed search: every term must appear in the subject or the text, or the fragment
/// must appear in an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    terms: Vec<Term>,
    fragment: Option<String>,
}

/// A piece of shown text: a match or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The text, as it was (escaped when rendered).
    pub text: String,
    /// Whether it matched.
    pub hit: bool,
}

/// Text as one unmatched piece.
pub fn plain(text: &str) -> Vec<Piece> {
    vec![Piece {
        text: text.to_owned(),
        hit: false,
    }]
}

/// What PostgreSQL's squashed addresses leave out (SQL's `message_squashed`).
const SQUASHED: [char; 6] = ['.', '@', '-', '_', '+', '\''];

/// Text matched literally by `LIKE` (its default escape character is `\\`).
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The words of a text, lowercased: runs of letters and digits (how SQLite's unicode61
/// tokenizer splits, and how PostgreSQL's index is fed).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Search {
    /// Reads what was typed. `Err` says what is wrong with it; `Ok(None)` is an empty
    /// search.
    pub fn parse(input: &str) -> Result<Option<Search>, String> {
        let input = input.trim_start();
        if input.chars().count() > MAX_LEN {
            return Err(format!("Search for at most {MAX_LEN} characters."));
        }
        if input.trim().is_empty() {
            return Ok(None);
        }
        let typing = input.ends_with(|c: char| c.is_alphanumeric());
        let mut terms = Vec::new();
        for (i, part) in input.split('"').enumerate() {
            if i % 2 == 1 {
                let phrase: Vec<String> = words(part).collect();
                match phrase.len() {
                    0 => {}
                    1 => terms.push(Term::Word {
                        text: phrase.into_iter().next().unwrap_or_default(),
                        prefix: false,
                    }),
                    _ => terms.push(Term::Phrase(phrase)),
                }
            } else {
                terms.extend(words(part).map(|text| Term::Word {
                    text,
                    prefix: false,
                }));
            }
        }
        let quoted_last = input.trim_end().ends_with('"');
        if typing
            && !quoted_last
            && let Some(Term::Word { text, prefix }) = terms.last_mut()
        {
            *prefix = text.chars().count() >= 2;
        }
        terms.truncate(MAX_TERMS);
        let compact = input.trim();
        let fragment = (compact.chars().count() >= 3
            && !compact.contains(char::is_whitespace)
            && !compact.contains('"'))
        .then(|| compact.to_lowercase());
        if terms.is_empty() && fragment.is_none() {
            return Err(format!(
                "Nothing to search for in {compact:?}: type words or a part of an address."
            ));
        }
        Ok(Some(Search { terms, fragment }))
    }

    /// The FTS5 query for the word index (every term, in any column), if any.
    pub fn fts5(&self) -> Option<String> {
        // Terms hold letters and digits only, so quoting them is safe.
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|term| match term {
                Term::Word { text, prefix: true } => format!("\"{text}\"*"),
                Term::Word { text, .. } => format!("\"{text}\""),
                Term::Phrase(words) => format!("\"{}\"", words.join(" ")),
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The PostgreSQL `tsquery` (for `to_tsquery('simple', …)`), if any.
    pub fn tsquery(&self) -> Option<String> {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|term| match term {
                Term::Word { text, prefix: true } => format!("'{text}':*"),
                Term::Word { text, .. } => format!("'{text}'"),
                Term::Phrase(words) => format!(
                    "({})",
                    words
                        .iter()
                        .map(|w| format!("'{w}'"))
                        .collect::<Vec<_>>()
                        .join(" <-> ")
                ),
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(" & "))
    }

    /// A `tsquery` GIN answers cheaply whose matches hold every match of [`tsquery`],
    /// when it differs: each phrase's words without their order (GIN cannot check it
    /// without reading the rows), and no short word being typed when another word is
    /// there to narrow with (a prefix of two or three letters makes GIN gather every word
    /// it starts, however few rows the other words leave: `'s' & 'gr':*` took 90 ms at
    /// 1M messages). `None` when the query is its own best candidate query.
    pub fn tsquery_candidates(&self) -> Option<String> {
        let has_phrase = self.terms.iter().any(|t| matches!(t, Term::Phrase(_)));
        let short = |t: &Term| matches!(t, Term::Word { text, prefix: true } if text.chars().count() < SHORT_PREFIX);
        let has_short = self.terms.iter().any(short);
        let all_short = self.terms.iter().all(short);
        if !has_phrase && (!has_short || all_short) {
            return None;
        }
        let parts: Vec<String> = self
            .terms
            .iter()
            .flat_map(|term| match term {
                Term::Word { prefix: true, .. } if short(term) => Vec::new(),
                Term::Word { text, prefix: true } => vec![format!("'{text}':*")],
                Term::Word { text, .. } => vec![format!("'{text}'")],
                Term::Phrase(words) => words.iter().map(|w| format!("'{w}'")).collect(),
            })
            .collect();
        Some(parts.join(" & "))
    }

    /// The FTS5 query for the trigram index of addresses, if the search can be a part of
    /// one.
    pub fn fts5_fragment(&self) -> Option<String> {
        self.fragment
            .as_ref()
            .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
    }

    /// Whether the fragment, if any, is in these addresses (case folded as FTS5's trigram
    /// index folds it: every letter, not only ASCII).
    pub fn fragment_in(&self, addresses: &str) -> bool {
        self.fragment
            .as_ref()
            .is_some_and(|f| addresses.to_lowercase().contains(f.as_str()))
    }

    /// The `ILIKE` pattern for the addresses (PostgreSQL), if any.
    pub fn like_fragment(&self) -> Option<String> {
        self.fragment
            .as_ref()
            .map(|f| format!("%{}%", escape_like(f)))
    }

    /// The `LIKE` pattern for the fragment without the punctuation addresses are made
    /// of (SQL's `message_squashed` removes the same characters), matched against the
    /// addresses squashed that way, whose trigrams PostgreSQL indexes: pg_trgm cuts
    /// words at punctuation, so `r.mitche` would give trigrams of lone letters most
    /// addresses share. `None` when fewer than three characters are left (no trigram to
    /// look up).
    pub fn like_squashed(&self) -> Option<String> {
        let squashed: String = self
            .fragment
            .as_ref()?
            .chars()
            .filter(|c| !SQUASHED.contains(c))
            .collect();
        (squashed.chars().count() >= 3).then(|| format!("%{}%", escape_like(&squashed)))
    }

    /// Whether a word of a text (lowercased) matches a term.
    fn matches(&self, word: &str) -> bool {
        self.terms.iter().any(|term| match term {
            Term::Word { text, prefix: true } => word.starts_with(text.as_str()),
            Term::Word { text, .. } => word == text,
            Term::Phrase(words) => words.iter().any(|w| w == word),
        })
    }

    /// A text cut in pieces, the matching words marked.
    pub fn mark(&self, text: &str) -> Vec<Piece> {
        let mut pieces: Vec<Piece> = Vec::new();
        let mut push = |text: &str, hit: bool| match pieces.last_mut() {
            Some(last) if last.hit == hit => last.text.push_str(text),
            _ => pieces.push(Piece {
                text: text.to_owned(),
                hit,
            }),
        };
        let mut start = 0;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            if c.is_alphanumeric() {
                continue;
            }
            if start < i {
                let word = &text[start..i];
                push(word, self.matches(&word.to_lowercase()));
            }
            if i < text.len() {
                push(&text[i..i + c.len_utf8()], false);
            }
            start = i + c.len_utf8();
        }
        pieces
    }

    /// An address cut in pieces, the part that matched the fragment marked (or its
    /// matching words).
    pub fn mark_address(&self, text: &str) -> Vec<Piece> {
        let Some(fragment) = &self.fragment else {
            return self.mark(text);
        };
        let lower = text.to_ascii_lowercase();
        let fragment = fragment.to_ascii_lowercase();
        let mut pieces = Vec::new();
        let mut rest = 0;
        while let Some(found) = lower[rest..].find(&fragment) {
            let at = rest + found;
            if !text.is_char_boundary(at) || !text.is_char_boundary(at + fragment.len()) {
                break;
            }
            if at > rest {
                pieces.push(Piece {
                    text: text[rest..at].to_owned(),
                    hit: false,
                });
            }
            pieces.push(Piece {
                text: text[at..at + fragment.len()].to_owned(),
                hit: true,
            });
            rest = at + fragment.len();
        }
        if pieces.is_empty() {
            return self.mark(text);
        }
        if rest < text.len() {
            pieces.push(Piece {
                text: text[rest..].to_owned(),
                hit: false,
            });
        }
        pieces
    }

    /// Up to `len` characters of a text around its first matching word (its start if
    /// none matches), whitespace flattened, marked.
    pub fn snippet(&self, text: &str, len: usize) -> Vec<Piece> {
        let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let first = flat
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .find(|w| self.matches(&w.to_lowercase()))
            .map(|w| w.as_ptr() as usize - flat.as_ptr() as usize);
        let chars: Vec<(usize, char)> = flat.char_indices().collect();
        let at = first
            .and_then(|byte| chars.iter().position(|(i, _)| *i == byte))
            .unwrap_or(0);
        let from = at.saturating_sub(len / 4);
        let to = (from + len).min(chars.len());
        let start = chars.get(from).map_or(flat.len(), |(i, _)| *i);
        let end = chars.get(to).map_or(flat.len(), |(i, _)| *i);
        let mut shown = String::new();
        if from > 0 {
            shown.push('…');
        }
        shown.push_str(&flat[start..end]);
        if to < chars.len() {
            shown.push('…');
        }
        self.mark(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Search {
        Search::parse(input)
            .expect("valid")
            .expect("something to search")
    }

    #[test]
    fn words_become_quoted_terms_and_the_last_one_a_prefix_while_typed() {
        let s = parse("Invoice Q3-report");
        assert_eq!(s.fts5().as_deref(), Some("\"invoice\" \"q3\" \"report\"*"));
        assert_eq!(
            s.tsquery().as_deref(),
            Some("'invoice' & 'q3' & 'report':*")
        );
        assert_eq!(
            s.fts5_fragment(),
            None,
            "a search with spaces is no address"
        );
        let done = parse("invoice ");
        assert_eq!(done.fts5().as_deref(), Some("\"invoice\""));
    }

    #[test]
    fn quotes_make_phrases_and_syntax_is_never_passed_through() {
        let s = parse("\"quarterly report\" NOT OR * :) ' -x");
        assert_eq!(
            s.fts5().as_deref(),
            Some("\"quarterly report\" \"not\" \"or\" \"x\""),
            "a one-letter last word is no prefix"
        );
        assert_eq!(
            s.tsquery().as_deref(),
            Some("('quarterly' <-> 'report') & 'not' & 'or' & 'x'")
        );
        assert_eq!(
            s.tsquery_candidates().as_deref(),
            Some("'quarterly' & 'report' & 'not' & 'or' & 'x'")
        );
        assert_eq!(parse("invoice ").tsquery_candidates(), None);
        assert_eq!(
            parse("invoice rep").tsquery_candidates().as_deref(),
            Some("'invoice'")
        );
        assert_eq!(
            parse("invoice repo").tsquery_candidates(),
            None,
            "a longer prefix narrows"
        );
        assert_eq!(parse("rep").tsquery_candidates(), None);
    }

    #[test]
    fn a_part_of_an_address_is_a_fragment_escaped_for_like() {
        let s = parse("Jo@Exam");
        assert_eq!(s.fts5_fragment().as_deref(), Some("\"jo@exam\""));
        assert_eq!(s.like_fragment().as_deref(), Some("%jo@exam%"));
        assert_eq!(s.like_squashed().as_deref(), Some("%joexam%"));
        assert_eq!(parse("a.b").like_squashed(), None, "no trigram left");
        assert_eq!(
            parse("o'b+x%y").like_squashed().as_deref(),
            Some("%obx\\%y%")
        );
        assert_eq!(
            parse("a_b%c").like_fragment().as_deref(),
            Some("%a\\_b\\%c%")
        );
        let marked = s.mark_address("Jo@Example.com");
        assert_eq!(
            marked,
            vec![
                Piece {
                    text: "Jo@Exam".into(),
                    hit: true
                },
                Piece {
                    text: "ple.com".into(),
                    hit: false
                }
            ]
        );
    }

    #[test]
    fn empty_long_and_wordless_searches() {
        assert_eq!(Search::parse("   "), Ok(None));
        assert!(Search::parse(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(Search::parse("!!").is_err());
        assert!(
            Search::parse("!!!").is_ok(),
            "three characters of an address"
        );
    }

    #[test]
    fn marking_keeps_the_text_and_marks_whole_words() {
        let s = parse("script ");
        let pieces = s.mark("<script>alert(1)</script> scripted");
        let joined: String = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, "<script>alert(1)</script> scripted");
        let hits: Vec<&str> = pieces
            .iter()
            .filter(|p| p.hit)
            .map(|p| p.text.as_str())
            .collect();
        assert_eq!(hits, ["script", "script"]);
        let snippet = parse("needle").snippet(&format!("{} needle end", "word ".repeat(100)), 60);
        assert!(snippet.iter().any(|p| p.hit && p.text == "needle"));
        assert!(snippet[0].text.starts_with('…'));
    }
}
