package budget

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Micros is an amount of US dollars in millionths of a dollar. Spend is summed over
// millions of calls, each costing fractions of a cent; integers keep the sum exact
// where float64 would drift.
type Micros int64

// perDollar is the number of Micros in one dollar.
const perDollar = 1_000_000

// ParseMicros parses a non-negative decimal amount of dollars such as "50", "0.30" or
// "16.666666". The grammar is deliberately narrow: ASCII digits, optionally a '.'
// followed by 1 to 6 digits. Signs, exponents, fractions such as "1/3", a leading or
// trailing bare '.', and a seventh decimal are refused rather than rounded, because an
// amount in the configuration that cannot be represented exactly is a mistake to report,
// not one to paper over.
func ParseMicros(s string) (Micros, error) {
	m, err := parseMicros(s)
	if err != nil {
		return 0, fmt.Errorf("parse amount %q: %w", s, err)
	}
	return m, nil
}

var (
	errSyntax   = errors.New("not a non-negative decimal with at most 6 decimal places")
	errDecimals = errors.New("more than 6 decimal places")
	errRange    = errors.New("too large")
)

func parseMicros(s string) (Micros, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") || !allDigits(whole) || !allDigits(frac) {
		return 0, errSyntax
	}
	if len(frac) > 6 {
		return 0, errDecimals
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > math.MaxInt64/perDollar {
		return 0, errRange
	}
	var fm int64
	for i := 0; i < 6; i++ {
		fm *= 10
		if i < len(frac) {
			fm += int64(frac[i] - '0')
		}
	}
	total := w*perDollar + fm
	if total < 0 { // w*perDollar fits, adding < 1e6 can still wrap at the very top
		return 0, errRange
	}
	return Micros(total), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats m as dollars with exactly six decimals ("50.000000", "0.300000",
// "-1.500000"): one fixed form keeps log lines and refusal reasons comparable and is
// what ParseMicros reads back.
func (m Micros) String() string {
	sign, u := "", uint64(m)
	if m < 0 {
		sign, u = "-", -u // two's complement: correct for math.MinInt64 too
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/perDollar, u%perDollar)
}

// Cost is the price of one model call: tokens × price per million tokens, rounded up to
// the micro-dollar. Rounding up means recorded spend is never below the real spend, so
// a budget is never overrun by accumulated rounding. Negative token counts or prices
// count as zero. The arithmetic is 128-bit, and a result beyond Micros saturates at the
// largest value rather than wrapping to a small or negative cost.
func Cost(inputTokens, outputTokens int64, inputPerMillion, outputPerMillion Micros) Micros {
	hi1, lo1 := bits.Mul64(nonNeg(inputTokens), nonNeg(int64(inputPerMillion)))
	hi2, lo2 := bits.Mul64(nonNeg(outputTokens), nonNeg(int64(outputPerMillion)))
	lo, carry := bits.Add64(lo1, lo2, 0)
	hi, overflow := bits.Add64(hi1, hi2, carry)
	if overflow != 0 || hi >= perDollar { // quotient would not fit in 64 bits
		return math.MaxInt64
	}
	q, r := bits.Div64(hi, lo, perDollar)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return Micros(q)
}

func nonNeg(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

// addSat adds without wrapping; spend that would pass the largest value stays there.
func addSat(a, b Micros) Micros {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
