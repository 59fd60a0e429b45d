//! Stage 1, syntax: source text in, AST out. Parses with the pest grammar in `grammar/net.pest`
//! and reports syntax errors (E01xx) in words a user understands, never pest's rule names.

pub mod ast;
mod grammar;
mod lower;
pub mod print;

use crate::diagnostics::{Code, Diagnostic};
use crate::source::{SourceFile, Span};
use grammar::{NetParser, Rule};
use pest::Parser;

/// Brackets nested deeper than this are refused before parsing; with `lower::MAX_EXPR_DEPTH`
/// for operators, no input can exhaust the stack.
pub const MAX_NESTING: usize = 64;

/// Parses a model file. Returns the AST when the text is well formed, and any diagnostics.
pub fn parse(source: &SourceFile) -> (Option<ast::Model>, Vec<Diagnostic>) {
    parse_as(source, Rule::file, lower::Lowerer::model)
}

/// Parses one expression given outside a model file (a command-line option's value).
pub fn parse_expr(source: &SourceFile) -> (Option<ast::Expr>, Vec<Diagnostic>) {
    parse_as(source, Rule::expr_text, lower::Lowerer::expr_text)
}

/// Parses `source` as `rule` and lowers the match with `lower`.
fn parse_as<T>(
    source: &SourceFile,
    rule: Rule,
    lower: impl FnOnce(&mut lower::Lowerer, pest::iterators::Pair<Rule>) -> T,
) -> (Option<T>, Vec<Diagnostic>) {
    if let Some(diagnostic) = check_nesting(&source.text) {
        return (None, vec![diagnostic]);
    }
    pest::set_error_detail(true);
    match NetParser::parse(rule, &source.text) {
        Ok(mut pairs) => {
            let pair = pairs.next().expect("grammar: the rule matched");
            let mut lowerer = lower::Lowerer::default();
            let value = lower(&mut lowerer, pair);
            // An expression cut short for its depth is not worth checking.
            let whole = !lowerer.diagnostics.iter().any(|d| d.code == Code::E0103);
            (whole.then_some(value), lowerer.diagnostics)
        }
        Err(error) => {
            let gave_up = syntax_error(&source.text, &error);
            // A bracket that closes nothing has no fix of its own: the line where the parser
            // gave up may show the slip.
            let diagnostic = match unbalanced(&source.text, &gave_up) {
                Some(bracket) if bracket.help.is_some() => bracket,
                Some(bracket) => bracket.with_help(gave_up.help.clone().unwrap_or_else(|| {
                    "remove it, or add the opening bracket it was meant to close".into()
                })),
                None => gave_up,
            };
            (None, vec![diagnostic])
        }
    }
}

/// When brackets do not balance, the syntax error is better told at the bracket: a `{` never
/// closed, or closed by the wrong kind. Of the pairs that do match, the first whose closing
/// bracket, alone on its line, is indented unlike its opening line is taken to be where a
/// bracket went missing, as the file's layout shows it (rustc's heuristic).
fn unbalanced(text: &str, gave_up: &Diagnostic) -> Option<Diagnostic> {
    // Each open bracket with the indentation of its line; one pass, so any file is quick.
    let mut open: Vec<(usize, char, usize)> = Vec::new();
    let mut misaligned = None;
    let mut in_comment = false;
    let (mut indent, mut line_blank) = (0, true);
    for (at, c) in text.char_indices() {
        if c == '\n' {
            (in_comment, indent, line_blank) = (false, 0, true);
            continue;
        }
        let alone = line_blank;
        if line_blank && (c == ' ' || c == '\t') {
            indent += 1;
            continue;
        }
        line_blank = false;
        match c {
            '#' => in_comment = true,
            _ if in_comment => {}
            '(' | '[' | '{' => open.push((at, c, indent)),
            ')' | ']' | '}' => {
                let wanted = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match open.pop() {
                    Some((start, opener, opened_at)) if opener == wanted => {
                        if alone && indent != opened_at && misaligned.is_none() {
                            misaligned = Some((start, opener));
                        }
                    }
                    Some((start, opener, _)) => {
                        let closer = closing(opener);
                        let diagnostic = Diagnostic::new(
                            Code::E0101,
                            format!("`{opener}` is never closed"),
                            Span::new(start, start + 1),
                            "this bracket is not closed",
                        )
                        .with_label(
                            Span::new(at, at + 1),
                            format!("`{c}` comes before its `{closer}`"),
                        )
                        .with_help(format!("add the missing `{closer}`"));
                        return Some(gave_up_at(diagnostic, gave_up));
                    }
                    None => {
                        let diagnostic = Diagnostic::new(
                            Code::E0101,
                            format!("`{c}` closes nothing"),
                            Span::new(at, at + 1),
                            "no bracket is open here",
                        );
                        return Some(gave_up_at(diagnostic, gave_up));
                    }
                }
            }
            _ => {}
        }
    }
    let (start, opener) = misaligned.or(open.last().map(|&(start, opener, _)| (start, opener)))?;
    let diagnostic = Diagnostic::new(
        Code::E0101,
        format!("`{opener}` is never closed"),
        Span::new(start, start + 1),
        "this bracket is not closed",
    )
    .with_help(format!("add the missing `{}`", closing(opener)));
    Some(gave_up_at(diagnostic, gave_up))
}

fn closing(opener: char) -> char {
    match opener {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// Adds where the parser stopped, unless a label already marks that place.
fn gave_up_at(diagnostic: Diagnostic, gave_up: &Diagnostic) -> Diagnostic {
    match gave_up.labels.first() {
        Some(first) if diagnostic.labels.iter().all(|l| l.span != first.span) => diagnostic
            .with_label(
                first.span,
                format!("the parser gave up here: {}", gave_up.message),
            ),
        _ => diagnostic,
    }
}

fn check_nesting(text: &str) -> Option<Diagnostic> {
    let mut open = Vec::new();
    let mut in_comment = false;
    for (at, c) in text.char_indices() {
        match c {
            '#' => in_comment = true,
            '\n' => in_comment = false,
            _ if in_comment => {}
            '(' | '[' | '{' => {
                open.push(at);
                if open.len() > MAX_NESTING {
                    let outer = open[0];
                    return Some(
                        Diagnostic::new(
                            Code::E0103,
                            "brackets nested too deeply",
                            Span::new(at, at + 1),
                            "this bracket is too deep",
                        )
                        .with_label(Span::new(outer, outer + 1), "the outermost open bracket")
                        .with_note(format!(
                            "at most {MAX_NESTING} brackets may be open at once"
                        )),
                    );
                }
            }
            ')' | ']' | '}' => {
                open.pop();
            }
            _ => {}
        }
    }
    None
}

/// What the user should read for a grammar rule that was expected.
fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::kw_net => "`net`",
        Rule::ident | Rule::path => "a name",
        Rule::integer => "a whole number",
        Rule::number => "a number",
        Rule::shape => "a shape such as `[784]`",
        Rule::expr | Rule::call | Rule::list | Rule::boolean | Rule::neg => "an expression",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::matmul => "an operator",
        Rule::kw_input
        | Rule::kw_label
        | Rule::kw_target
        | Rule::kw_param
        | Rule::kw_layers
        | Rule::kw_loss
        | Rule::kw_optimizer
        | Rule::kw_schedule
        | Rule::kw_train
        | Rule::kw_metric
        | Rule::kw_penalty
        | Rule::equation
        | Rule::input_decl
        | Rule::label_decl
        | Rule::target_decl
        | Rule::param_decl
        | Rule::layers_decl
        | Rule::loss_decl
        | Rule::optimizer_decl
        | Rule::schedule_decl
        | Rule::train_decl
        | Rule::metric_decl
        | Rule::penalty_decl => {
            "a declaration (`input`, `param`, `layers`, `loss`, ...) or `name = ...`"
        }
        Rule::kw_class => "`class(...)`",
        Rule::kw_block | Rule::block_decl => "`block`",
        Rule::block_param => "a parameter such as `channels: int`",
        Rule::block_value | Rule::block_layers => "layers or an expression",
        Rule::layer | Rule::repeat_layers | Rule::if_layers | Rule::kw_repeat | Rule::kw_if => {
            "a layer"
        }
        Rule::kw_else => "`else`",
        Rule::arg => "an argument",
        Rule::call_args => "`(`",
        Rule::EOI => "the end of the file",
        _ => return None,
    })
}

fn syntax_error(text: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let mut at = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let mut expected: Vec<String> = Vec::new();
    if let Some(attempts) = error.parse_attempts() {
        at = attempts.max_position;
        for stack in attempts.call_stacks() {
            if let Some(words) = stack.deepest.get_rule().and_then(|rule| describe(*rule)) {
                push_unique(&mut expected, words.to_string());
            }
        }
        // Literal punctuation the grammar wanted; words and whitespace are covered by rules.
        let tokens: Vec<String> = attempts
            .expected_tokens()
            .iter()
            .map(ToString::to_string)
            .collect();
        let has = |t: &str| tokens.iter().any(|x| x == t);
        for token in &tokens {
            match token.as_str() {
                "+" | "*" | "/" | "@" => push_unique(&mut expected, "an operator".to_string()),
                // `(` and `[` together are the starts of an operand; `-` is covered either way.
                "(" | "[" if has("(") && has("[") => {
                    push_unique(&mut expected, "an expression".to_string())
                }
                "-" | "_" | "#" => {}
                t if !t.is_empty() && t.chars().all(|c| c.is_ascii_punctuation()) => {
                    push_unique(&mut expected, format!("`{t}`"))
                }
                _ => {}
            }
        }
        // After a complete operand, a call's `(` or a keyword's `:` is rarely what was meant.
        if expected.iter().any(|e| e == "an operator") {
            expected.retain(|e| e != "an expression" && e != "`(`" && e != "`:`");
        }
        if expected.iter().any(|e| e == "an expression") {
            expected.retain(|e| e != "a name" && e != "a number");
        }
    }
    // After the model, another block or nothing: the attempts name only the block.
    if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
        if !expected.is_empty() && positives.contains(&Rule::EOI) {
            push_unique(&mut expected, "the end of the file".to_string());
        }
    }
    if expected.is_empty() {
        if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
            for rule in positives {
                if let Some(words) = describe(*rule) {
                    push_unique(&mut expected, words.to_string());
                }
            }
        }
    }
    let (found, span) = found_at(text, at);
    let message = match expected.as_slice() {
        [] => format!("unexpected {found}"),
        [one] => format!("expected {one}, found {found}"),
        [init @ .., last] => format!("expected {} or {last}, found {found}", init.join(", ")),
    };
    let label = if span.start == span.end {
        "expected here".to_string()
    } else {
        "unexpected".to_string()
    };
    // The parser stops at a full-width mark, which `found_at` would take as the end of a word.
    let wide_at = text.get(at..).and_then(|rest| rest.chars().next());
    if let Some((wide, ascii)) = wide_at.and_then(full_width) {
        let span = Span::new(at, at + wide.len_utf8());
        let message = format!(
            "full-width `{wide}` (U+{:04X}) where netc reads ASCII",
            wide as u32
        );
        let help = match ascii {
            ';' => "netc needs no `;`: items are separated by newlines".to_string(),
            _ => format!("type the ASCII `{ascii}` (switch the input method to half-width)"),
        };
        return Diagnostic::new(Code::E0101, message, span, format!("this is not `{ascii}`"))
            .with_help(help);
    }
    if let Some(diagnostic) = foreign_punctuation(text, at) {
        return diagnostic;
    }
    let diagnostic = Diagnostic::new(Code::E0101, message, span, label);
    if let Some(help) = python_habit(text, span).or_else(|| likely_fix(text, at)) {
        return diagnostic.with_help(help);
    }
    if expected.iter().any(|e| e == "the end of the file") {
        return diagnostic.with_help(
            "after the model's closing `}` a file holds only `block` definitions: move this into `net { ... }` or remove it",
        );
    }
    if text.get(span.range()) != Some("=") {
        return diagnostic;
    }
    // Newlines are not significant, so a missing piece shows up at the next `name =`.
    let before = text[..span.start as usize].trim_end();
    let word_start = before
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[word_start..];

    if KEYWORDS.contains(&word) {
        diagnostic.with_help(format!(
            "`{word}` is a keyword and cannot name a value; choose another name"
        ))
    } else {
        diagnostic.with_help("is the statement before this one incomplete?")
    }
}

/// The language's keywords.
const KEYWORDS: &[&str] = &[
    "net",
    "input",
    "label",
    "target",
    "param",
    "layers",
    "loss",
    "optimizer",
    "schedule",
    "train",
    "metric",
    "penalty",
    "block",
    "repeat",
    "if",
    "else",
];

/// The words that start a section or declaration.
const SECTIONS: &[&str] = &[
    "input",
    "label",
    "target",
    "param",
    "loss",
    "optimizer",
    "schedule",
    "train",
    "metric",
    "penalty",
];

/// A help line for the slips a line's layout gives away, looked for on the line where the
/// parser gave up: punctuation from other languages, a missing `:` or `,`, the wrong brackets.
fn likely_fix(text: &str, at: usize) -> Option<String> {
    let (_, code) = code_of_line(text, at);
    let code = code.trim();
    let words: Vec<&str> = code.split_whitespace().collect();
    let first = words.first().copied().unwrap_or("");
    let second = words.get(1).copied().unwrap_or("");
    let (_, span) = found_at(text, at);
    let token = text.get(span.range()).unwrap_or("");
    let blank = |l: &str| l.split('#').next().unwrap_or("").trim().is_empty();
    if text.lines().all(blank) {
        return Some(
            "a model file holds `net NAME { ... }`: start from a file in `models/`".into(),
        );
    }
    // A misspelt keyword, British spellings included: `nett`, `optimiser`, `lable`; the
    // token the parser stopped at, or the word that starts its line unless it names a value.
    let starts_item = (!second.starts_with('=')).then_some(first);
    if let Some(keyword) = [Some(token), starts_item]
        .into_iter()
        .flatten()
        .find_map(near_keyword)
    {
        return Some(format!("did you mean `{keyword}`?"));
    }
    let operator = |c: char| "+-*/@".contains(c);
    let before = text[..span.start as usize].trim_end();
    if token.len() == 1 && token.chars().all(operator) && before.ends_with(operator) {
        return Some("two operators in a row: remove one".into());
    }
    if token.contains('.') && token.chars().all(|c| c.is_ascii_digit() || c == '.') {
        if let Some(whole) = token.split('.').next().filter(|w| !w.is_empty()) {
            return Some(format!("dimensions are whole numbers: `{whole}`"));
        }
    }
    if code.contains(",,") || code.contains(", ,") {
        return Some("remove the extra `,`".into());
    }
    if SECTIONS.contains(&first.trim_end_matches([':', '='])) {
        let keyword = first.trim_end_matches([':', '=']);
        if first.ends_with(':') || second == ":" {
            return Some(format!(
                "no `:` after `{keyword}`: write e.g. `{}`",
                example(keyword)
            ));
        }
        if let Some((_, rest)) = code
            .split_once('=')
            .filter(|_| first.ends_with('=') || second == "=")
        {
            let rest = rest.trim();
            let written = if rest.is_empty() {
                example(keyword).to_string()
            } else {
                format!("{keyword} {rest}")
            };
            return Some(format!(
                "no `=` after `{keyword}`: write `{written}`; to name a value, choose a name that is not a keyword"
            ));
        }
    }
    if matches!(first, "input" | "target" | "param") && !second.is_empty() && !code.contains(':') {
        let name = second.trim_end_matches(|c: char| !(c.is_alphanumeric() || c == '_'));
        let rest = code[code.find(name).map_or(0, |i| i + name.len())..].trim();
        let rest = if rest.is_empty() { "[784]" } else { rest };
        return Some(format!(
            "a colon separates the name from its shape: `{first} {name}: {rest}`"
        ));
    }
    if let Some(tuple) = python_tuple(code) {
        return Some(format!(
            "netc writes lists, shapes included, in square brackets: `[{}]`, not `{tuple}`",
            tuple
                .trim_matches(['(', ')'])
                .trim()
                .trim_end_matches(',')
                .trim()
        ));
    }
    if first == "label" && code.contains("class") && !code.contains("class(") {
        return Some("the number of classes goes in parentheses: `label y: class(10)`".into());
    }
    if first == "net" && !code.contains('{') {
        return Some(format!(
            "a model's items go in braces: `net {} {{ ... }}`",
            second.trim_end_matches(':')
        ));
    }
    if code.contains("layers [") || code.contains("layers[") {
        return Some("a layers block is written in braces: `layers { dense(10) }`".into());
    }
    if code.contains(".")
        && code
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(|w| w.starts_with('.') && w.len() > 1)
    {
        return Some("write a leading zero: `0.1`, not `.1`".into());
    }
    let spaced_numbers = code.split(['[', ']']).enumerate().any(|(i, part)| {
        let parts: Vec<&str> = part.split_whitespace().collect();
        i % 2 == 1
            && parts.len() > 1
            && parts
                .iter()
                .all(|p| p.chars().all(|c| c.is_ascii_digit() || c == '-'))
    });
    if spaced_numbers {
        return Some("separate the numbers of a list with commas: `[1, 28, 28]`".into());
    }
    None
}

/// The line holding byte `at`: where it starts, and its text before any `#` comment.
fn code_of_line(text: &str, at: usize) -> (usize, &str) {
    let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    (start, line.split('#').next().unwrap_or(""))
}

/// Punctuation of other languages on the line where the parser gave up, which the parser
/// may have stopped before reaching: reported where it is.
fn foreign_punctuation(text: &str, at: usize) -> Option<Diagnostic> {
    let (start, code) = code_of_line(text, at);
    let (offset, width, message, help) = if let Some(i) = code.find("//") {
        (
            i,
            2,
            "`//` does not start a comment",
            "comments start with `#`: `# like this`",
        )
    } else if let Some(i) = code.trim_end().strip_suffix(';').map(str::len) {
        (
            i,
            1,
            "`;` after an item",
            "netc needs no `;`: items are separated by newlines; remove it",
        )
    } else if let Some(i) = code.find(['"', '\'']) {
        (
            i,
            1,
            "quotes in a model file",
            "names and values are written without quotes: `optimizer sgd(lr: 0.1)`",
        )
    } else {
        return None;
    };
    let span = Span::new(start + offset, start + offset + width);
    Some(Diagnostic::new(Code::E0101, message, span, "not netc syntax").with_help(help))
}

/// The first Python tuple of numbers in a line, `(784, 10)` or `(784,)`: parentheses that
/// follow no name (so not a call) around numbers and at least one comma.
fn python_tuple(code: &str) -> Option<&str> {
    code.match_indices('(').find_map(|(open, _)| {
        let follows_name = code[..open]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let close = open + code[open..].find(')')?;
        let inside = &code[open + 1..close];
        let items: Vec<&str> = inside.split(',').map(str::trim).collect();
        let numbers = items.iter().enumerate().all(|(i, item)| {
            let last_empty = i == items.len() - 1 && item.is_empty();
            last_empty
                || item
                    .trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit())
                    && !item.is_empty()
        });
        (!follows_name && items.len() > 1 && numbers).then_some(&code[open..=close])
    })
}

/// The keyword a word is a slip of: at most two edits away, and fewer than half its length.
fn near_keyword(word: &str) -> Option<&'static str> {
    let is_word = word.chars().all(|c| c.is_alphanumeric() || c == '_');
    if !is_word || word.len() < 3 || KEYWORDS.contains(&word) {
        return None;
    }
    KEYWORDS
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .filter(|&(d, k)| d <= 2 && d < k.len() / 2 + 1)
        .min()
        .map(|(_, k)| k)
}

/// How a section is written, for help lines.
fn example(keyword: &str) -> &'static str {
    match keyword {
        "input" => "input x: [784]",
        "label" => "label y: class(10)",
        "target" => "target y: [1]",
        "param" => "param w: [784, 10]",
        "loss" => "loss cross_entropy",
        "optimizer" => "optimizer sgd(lr: 0.1)",
        "schedule" => "schedule cosine(warmup: 1)",
        "train" => "train { batch: 256, epochs: 10 }",
        "metric" => "metric accuracy",
        _ => "penalty l2(0.0001)",
    }
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// PyTorch's modules and what netc writes for them.
const TORCH_NAMES: &[(&str, &str)] = &[
    ("Linear", "`dense(units)` in a `layers` block"),
    (
        "Conv2d",
        "`conv2d(channels, kernel: k)` in a `layers` block",
    ),
    ("MaxPool2d", "`maxpool(k)`"),
    ("AvgPool2d", "`avgpool(k)`"),
    ("AdaptiveAvgPool2d", "`global_avgpool`"),
    ("BatchNorm1d", "`batchnorm`"),
    ("BatchNorm2d", "`batchnorm`"),
    ("Dropout", "`dropout(p)`"),
    ("Flatten", "`flatten`"),
    ("ReLU", "`relu`"),
    ("Sigmoid", "`sigmoid`"),
    ("Tanh", "`tanh`"),
    ("Softmax", "`softmax`"),
    ("Sequential", "a `layers { ... }` block"),
    ("CrossEntropyLoss", "`loss cross_entropy`"),
    ("MSELoss", "`loss mse`"),
    ("L1Loss", "`loss l1`"),
    ("SGD", "`optimizer sgd(lr: 0.1)`"),
    ("Adam", "`optimizer adam(lr: 0.001)`"),
];

/// A help line for Python and PyTorch written where netc was expected: `nn.Linear(784, 256)`,
/// `import torch`, `def forward`, or `lr=0.1` for `lr: 0.1`.
fn python_habit(text: &str, span: Span) -> Option<String> {
    let token = text.get(span.range())?;
    if let Some(name) = ["nn.", "torch.nn.", "torch.optim.", "optim.", "torch."]
        .iter()
        .find_map(|prefix| token.strip_prefix(prefix))
    {
        let netc = TORCH_NAMES.iter().find(|(torch, _)| *torch == name).map_or(
            "see `docs/language.md` for the layers".to_string(),
            |(_, netc)| format!("netc writes {netc}"),
        );
        return Some(format!("`{token}` is PyTorch; {netc}"));
    }
    match token {
        "import" | "from" => {
            return Some("netc files are not Python and import nothing: a file is `net name { ... }`".into())
        }
        "def" | "class" | "self" | "forward" => {
            return Some("netc has no classes or methods: the network is a `layers { ... }` block or equations, and reusable parts are `block name(...) { ... }`".into())
        }
        _ => {}
    }
    // `name=value` inside a call, as in Python: netc names arguments with `:`.
    let after = text
        .get(span.end as usize..)?
        .trim_start_matches([' ', '\t']);
    let line_start = text[..span.start as usize].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line_start..span.start as usize];
    let open = before.matches('(').count() > before.matches(')').count();
    let is_name = token.chars().all(|c| c.is_alphanumeric() || c == '_');
    if open && is_name && after.starts_with('=') && !after.starts_with("==") {
        let value = after[1..].trim_start();
        let value: String = value
            .chars()
            .take_while(|c| !matches!(c, ',' | ')' | '\n'))
            .collect();
        return Some(format!(
            "arguments are named with `:`, not `=`: write `{token}: {}`",
            value.trim_end()
        ));
    }
    None
}

/// A full-width or ideographic punctuation mark, as Chinese and Japanese input methods type
/// them, with the ASCII one netc reads.
fn full_width(c: char) -> Option<(char, char)> {
    let ascii = match c {
        '：' => ':',
        '（' => '(',
        '）' => ')',
        '，' | '、' => ',',
        '；' => ';',
        '｛' => '{',
        '｝' => '}',
        '［' => '[',
        '］' => ']',
        '＝' => '=',
        '＋' => '+',
        '－' => '-',
        '＊' => '*',
        '／' => '/',
        '＠' => '@',
        '．' | '。' => '.',
        '＃' => '#',
        _ => return None,
    };
    Some((c, ascii))
}

/// Describes the token starting at byte `at`, and its span.
fn found_at(text: &str, at: usize) -> (String, Span) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    // A failure inside a word (`nett`, `1e400`) is reported for the whole word.
    while let Some(prev) = text[..at].chars().next_back().filter(|&c| is_word(c)) {
        at -= prev.len_utf8();
    }
    let rest = &text[at..];
    let Some(first) = rest.chars().next() else {
        return ("the end of the file".to_string(), Span::new(at, at));
    };
    let len = if is_word(first) {
        rest.find(|c: char| !is_word(c)).unwrap_or(rest.len())
    } else {
        first.len_utf8()
    };
    let token = &rest[..len];
    let shown = match first {
        '\n' | '\r' => "the end of the line".to_string(),
        _ if first.is_whitespace() => "whitespace".to_string(),
        _ => format!("`{}`", token.escape_debug()),
    };
    (shown, Span::new(at, at + len))
}
