package pii

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Obfuscated e-mail addresses: "jane.doe(at)example.com", "jane [at] example [dot] com",
// and the spoken "jane dot doe at example dot com". An address is found from its at
// marker, a bracketed "at" ("(at)", "[at]", "{at}", "<at>", any case, spaces allowed
// around and inside) or the word " at " ("at", "AT" or "At" between single spaces). Dots
// are '.', a bracketed "dot", or the word " dot " ("dot", "DOT", "Dot"). The domain
// after the marker is two or more labels joined by dots, ending in a top-level domain
// of two or more letters.
//
// "at" is one of the commonest English words, so the word form takes more: every dot
// of its domain must be a "dot" word or bracketed, and its top-level domain must be one
// of spokenTLDs. "meet at noon", "look at this." and "we met at amazon.com" stay.

// spokenTLDs are the top-level domains accepted after a spoken " at ". Two-letter
// English words ("in", "is", "it", "me", "no", "at") are left out, or "look at the dot
// in the middle" would be an address.
var spokenTLDs = map[string]bool{
	"com": true, "net": true, "org": true, "edu": true, "gov": true, "mil": true, "info": true,
	"biz": true, "io": true, "co": true, "ai": true, "app": true, "dev": true, "tv": true,
	"uk": true, "ca": true, "au": true, "nz": true, "ie": true, "de": true, "ch": true,
	"fr": true, "nl": true, "es": true, "pt": true, "se": true, "dk": true, "fi": true,
	"pl": true, "cz": true, "ru": true, "jp": true, "cn": true, "kr": true, "hk": true,
	"sg": true, "br": true, "mx": true, "za": true, "eu": true,
}

// Limits from RFC 5321: 64 bytes of local part, 63 of a label, 255 of a domain.
const (
	maxLocal  = 64
	maxLabel  = 63
	maxDomain = 255
)

// Kinds of dot.
const (
	dotPlain = iota
	dotWord
	dotBracketed
)

// obfuscatedCandidates returns where an obfuscated address could have its at marker,
// sorted: the opening bracket of each bracketed "at", and the space before each word
// " at " that is followed by a label and a dot that is no plain '.'. It allocates only
// when it finds one.
func obfuscatedCandidates(s string) []int {
	var cands []int
	// atBeforeLabel adds the " at " before the label that ends at i, if there is one.
	atBeforeLabel := func(i int) {
		ls, ok := labelStartBefore(s, i)
		if ok && ls >= 4 && s[ls-4] == ' ' && isCased(s[ls-3:ls-1], "at") && s[ls-1] == ' ' {
			cands = append(cands, ls-4)
		}
	}
	for k := 0; k < len(closers); k++ {
		for off := 0; ; {
			j := strings.IndexByte(s[off:], closers[k])
			if j < 0 {
				break
			}
			c := off + j
			off = c + 1
			o, word, ok := bracketedBefore(s, c+1)
			switch {
			case !ok:
			case word == "at":
				cands = append(cands, o)
			case word == "dot":
				if o > 0 && s[o-1] == ' ' {
					o--
				}
				atBeforeLabel(o)
			}
		}
	}
	for _, dot := range [...]string{"dot", "DOT", "Dot"} {
		for off := 0; ; {
			j := strings.Index(s[off:], dot)
			if j < 0 {
				break
			}
			d := off + j
			off = d + 3
			if d > 0 && s[d-1] == ' ' && d+3 < len(s) && s[d+3] == ' ' {
				atBeforeLabel(d - 1)
			}
		}
	}
	if len(cands) > 1 {
		slices.Sort(cands)
		cands = slices.Compact(cands)
	}
	return cands
}

// allPositions is every position of s, the candidates obfuscatedCandidates is tested
// against.
func allPositions(s string) []int {
	ps := make([]int, len(s))
	for i := range ps {
		ps[i] = i
	}
	return ps
}

// obfuscatedEmails claims the obfuscated addresses whose at marker is at one of the
// candidates, in order, skipping those that overlap something already claimed.
func (r *redactor) obfuscatedEmails(cands []int) {
	claimed := len(r.spans)
	lastEnd := -1 // the end of the last address claimed here
	for _, i := range cands {
		start, end, ok := obfuscatedAt(r.s, i)
		if !ok || start < lastEnd || r.overlaps(start, end, claimed) {
			continue
		}
		r.claim(start, end, Email)
		lastEnd = end
	}
	if len(r.spans) > claimed {
		r.sortSpans()
	}
}

// overlaps reports whether [start, end) overlaps one of the first n spans.
func (r *redactor) overlaps(start, end, n int) bool {
	spans := r.spans[:n]
	k, _ := slices.BinarySearchFunc(spans, start, func(sp span, t int) int { return sp.end - t - 1 })
	// spans[k] is the first span that ends after start.
	return k < len(spans) && spans[k].start < end
}

// obfuscatedAt reads the obfuscated address whose at marker starts at i.
func obfuscatedAt(s string, i int) (start, end int, ok bool) {
	var localEnd, domainStart int
	word := false
	switch {
	case i+4 <= len(s) && s[i] == ' ' && isCased(s[i+1:i+3], "at") && s[i+3] == ' ':
		word, localEnd, domainStart = true, i, i+4
	case i < len(s) && strings.IndexByte(openers, s[i]) >= 0:
		w, after, ok := bracketedAfter(s, i)
		if !ok || w != "at" {
			return 0, 0, false
		}
		localEnd, domainStart = i, after
		if i > 0 && s[i-1] == ' ' {
			localEnd = i - 1
		}
		if domainStart < len(s) && s[domainStart] == ' ' {
			domainStart++
		}
	default:
		return 0, 0, false
	}
	start, ok = localBefore(s, localEnd)
	if !ok {
		return 0, 0, false
	}
	end, ok = domainAfter(s, domainStart, word)
	return start, end, ok
}

// localBefore reads the local part that ends at i: words joined by dots of any kind.
func localBefore(s string, i int) (int, bool) {
	start := runBefore(s, i, isLocalRune, maxLocal)
	if start == i {
		return 0, false
	}
	for {
		m, ok := dotBefore(s, start)
		if !ok {
			break
		}
		ws := runBefore(s, m, isLocalRune, maxLocal)
		if ws == m || i-ws > maxLocal {
			break
		}
		start = ws
	}
	if i-start > maxLocal {
		return 0, false
	}
	return start, true
}

// domainAfter reads the domain that starts at i and returns where it ends: the longest
// run of two or more labels joined by dots whose last label is a top-level domain and
// ends the word. After a word " at ", dots must be words or bracketed and the top-level
// domain one of spokenTLDs.
func domainAfter(s string, i int, word bool) (int, bool) {
	var labels [maxDomain/2 + 1]struct{ start, end int }
	n := 0
	e := runAfter(s, i, isLabelRune, maxLabel)
	if e == i || e-i > maxLabel {
		return 0, false
	}
	labels[n].start, labels[n].end, n = i, e, n+1
	for e-i < maxDomain && n < len(labels) {
		m, kind, ok := dotAfter(s, e)
		if !ok || (word && kind == dotPlain) {
			break
		}
		e2 := runAfter(s, m, isLabelRune, maxLabel)
		if e2 == m || e2-m > maxLabel {
			break
		}
		e = e2
		labels[n].start, labels[n].end, n = m, e2, n+1
	}
	for k := n - 1; k >= 1; k-- {
		l := labels[k]
		if l.end-i <= maxDomain && boundaryAfter(s, l.end) && isTLD(s[l.start:l.end], word) {
			return l.end, true
		}
	}
	return 0, false
}

// labelStartBefore returns where the label that ends at i starts, if there is one.
func labelStartBefore(s string, i int) (int, bool) {
	ls := runBefore(s, i, isLabelRune, maxLabel)
	return ls, ls < i && i-ls <= maxLabel
}

// isTLD reports whether a label can be a top-level domain: letters only, at least two.
func isTLD(l string, word bool) bool {
	if word {
		var buf [4]byte
		if len(l) > len(buf) {
			return false
		}
		for i := 0; i < len(l); i++ {
			buf[i] = l[i] | 0x20
		}
		return spokenTLDs[string(buf[:len(l)])]
	}
	n := 0
	for _, c := range l {
		if !unicode.IsLetter(c) {
			return false
		}
		n++
	}
	return n >= 2
}

// dotAfter reads the dot that starts at i and returns where it ends.
func dotAfter(s string, i int) (end, kind int, ok bool) {
	if i >= len(s) {
		return 0, 0, false
	}
	if s[i] == '.' {
		return i + 1, dotPlain, true
	}
	if i+5 <= len(s) && s[i] == ' ' && isCased(s[i+1:i+4], "dot") && s[i+4] == ' ' {
		return i + 5, dotWord, true
	}
	o := i
	if s[o] == ' ' {
		o++
	}
	if o < len(s) && strings.IndexByte(openers, s[o]) >= 0 {
		if w, after, ok := bracketedAfter(s, o); ok && w == "dot" {
			if after < len(s) && s[after] == ' ' {
				after++
			}
			return after, dotBracketed, true
		}
	}
	return 0, 0, false
}

// dotBefore reads the dot that ends at i and returns where it starts.
func dotBefore(s string, i int) (int, bool) {
	if i < 1 {
		return 0, false
	}
	if s[i-1] == '.' {
		return i - 1, true
	}
	if i >= 5 && s[i-5] == ' ' && isCased(s[i-4:i-1], "dot") && s[i-1] == ' ' {
		return i - 5, true
	}
	c := i
	if s[c-1] == ' ' {
		c--
	}
	if o, w, ok := bracketedBefore(s, c); ok && w == "dot" {
		if o > 0 && s[o-1] == ' ' {
			o--
		}
		return o, true
	}
	return 0, false
}

const (
	openers = "([{<"
	closers = ")]}>"
)

// bracketedAfter reads a bracketed "at" or "dot" whose opening bracket is at i, with an
// optional space inside each bracket, and returns the word in lower case and where the
// closing bracket ends.
func bracketedAfter(s string, i int) (word string, end int, ok bool) {
	k := strings.IndexByte(openers, s[i])
	j := i + 1
	if j < len(s) && s[j] == ' ' {
		j++
	}
	for _, w := range [...]string{"at", "dot"} {
		e := j + len(w)
		if e > len(s) || !strings.EqualFold(s[j:e], w) {
			continue
		}
		if e < len(s) && s[e] == ' ' {
			e++
		}
		if e < len(s) && s[e] == closers[k] {
			return w, e + 1, true
		}
	}
	return "", 0, false
}

// bracketedBefore reads a bracketed "at" or "dot" whose closing bracket ends at i and
// returns where its opening bracket is and the word in lower case.
func bracketedBefore(s string, i int) (open int, word string, ok bool) {
	if i < 1 {
		return 0, "", false
	}
	k := strings.IndexByte(closers, s[i-1])
	if k < 0 {
		return 0, "", false
	}
	j := i - 1
	if j > 0 && s[j-1] == ' ' {
		j--
	}
	for _, w := range [...]string{"at", "dot"} {
		b := j - len(w)
		if b < 0 || !strings.EqualFold(s[b:j], w) {
			continue
		}
		if b > 0 && s[b-1] == ' ' {
			b--
		}
		if b > 0 && s[b-1] == openers[k] {
			return b - 1, w, true
		}
	}
	return 0, "", false
}

// isCased reports whether s is w (lower case) in lower case, upper case or title case.
func isCased(s, w string) bool {
	if len(s) != len(w) {
		return false
	}
	lower, upper, title := true, true, true
	for i := 0; i < len(w); i++ {
		c, up := s[i], w[i]-'a'+'A'
		lower = lower && c == w[i]
		upper = upper && c == up
		title = title && (i == 0 && c == up || i > 0 && c == w[i])
	}
	return lower || upper || title
}

// runBefore returns where the run of runes satisfying ok that ends at i starts, looking
// back no further than limit bytes plus one rune (so that a run longer than limit is
// seen to be).
func runBefore(s string, i int, ok func(rune) bool, limit int) int {
	j := i
	for j > 0 && i-j <= limit {
		c, size := utf8.DecodeLastRuneInString(s[:j])
		if !ok(c) {
			break
		}
		j -= size
	}
	return j
}

// runAfter returns where the run of runes satisfying ok that starts at i ends, looking
// no further than limit bytes plus one rune.
func runAfter(s string, i int, ok func(rune) bool, limit int) int {
	j := i
	for j < len(s) && j-i <= limit {
		c, size := utf8.DecodeRuneInString(s[j:])
		if !ok(c) {
			break
		}
		j += size
	}
	return j
}

// emailScripts are the scripts of emailLetters.
var emailScripts = []*unicode.RangeTable{
	unicode.Latin, unicode.Greek, unicode.Cyrillic, unicode.Armenian, unicode.Hebrew,
	unicode.Arabic, unicode.Devanagari,
}

func isEmailLetter(c rune) bool {
	if c < utf8.RuneSelf {
		return isLetter(byte(c))
	}
	return c != utf8.RuneError && unicode.IsLetter(c) && unicode.In(c, emailScripts...)
}

// isLocalRune reports the characters of a local part's words (dots join words).
func isLocalRune(c rune) bool {
	return isEmailLetter(c) || c < utf8.RuneSelf && (isDigit(byte(c)) || strings.IndexByte("_%+-", byte(c)) >= 0)
}

// isLabelRune reports the characters of a domain label.
func isLabelRune(c rune) bool {
	return isEmailLetter(c) || c < utf8.RuneSelf && (isDigit(byte(c)) || c == '-')
}
