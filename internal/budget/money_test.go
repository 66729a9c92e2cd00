package budget

import (
	"math"
	"strings"
	"testing"
)

func TestParseMicros(t *testing.T) {
	tests := []struct {
		in      string
		want    Micros
		wantErr string // substring of the error; empty means success
	}{
		{in: "0", want: 0},
		{in: "50", want: 50_000_000},
		{in: "50.00", want: 50_000_000},
		{in: "0.30", want: 300_000},
		{in: "16.666666", want: 16_666_666},
		{in: "0.000001", want: 1},
		{in: "0.006", want: 6_000},
		{in: "007.5", want: 7_500_000},
		{in: "1000000", want: 1_000_000_000_000},
		{in: "9223372036854.775807", want: math.MaxInt64},
		{in: "", wantErr: "not a non-negative decimal"},
		{in: "-1", wantErr: "not a non-negative decimal"},
		{in: "+1", wantErr: "not a non-negative decimal"},
		{in: "abc", wantErr: "not a non-negative decimal"},
		{in: "1.2345678", wantErr: "more than 6 decimal places"},
		{in: "0.0000001", wantErr: "more than 6 decimal places"},
		{in: "1.", wantErr: "not a non-negative decimal"},
		{in: ".5", wantErr: "not a non-negative decimal"},
		{in: ".", wantErr: "not a non-negative decimal"},
		{in: "1e3", wantErr: "not a non-negative decimal"},
		{in: "1/3", wantErr: "not a non-negative decimal"},
		{in: " 1", wantErr: "not a non-negative decimal"},
		{in: "1 ", wantErr: "not a non-negative decimal"},
		{in: "1,50", wantErr: "not a non-negative decimal"},
		{in: "1.2.3", wantErr: "not a non-negative decimal"},
		{in: "١", wantErr: "not a non-negative decimal"}, // Arabic-Indic one
		{in: "9223372036854.775808", wantErr: "too large"},
		{in: "9223372036855", wantErr: "too large"},
		{in: "99999999999999999999", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMicros(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseMicros(%q) = %d, want an error", tt.in, got)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Fatalf("error %q does not name the input and %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMicros(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestMicrosString(t *testing.T) {
	tests := []struct {
		m    Micros
		want string
	}{
		{0, "0.000000"},
		{1, "0.000001"},
		{300_000, "0.300000"},
		{50_000_000, "50.000000"},
		{16_666_666, "16.666666"},
		{-1_500_000, "-1.500000"},
		{-1, "-0.000001"},
		{math.MaxInt64, "9223372036854.775807"},
		{math.MinInt64, "-9223372036854.775808"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.m.String(); got != tt.want {
				t.Fatalf("Micros(%d).String() = %q, want %q", int64(tt.m), got, tt.want)
			}
			if tt.m < 0 {
				return
			}
			back, err := ParseMicros(tt.want)
			if err != nil || back != tt.m {
				t.Fatalf("round trip of %q = %d, %v", tt.want, back, err)
			}
		})
	}
}

func TestCost(t *testing.T) {
	tests := []struct {
		name          string
		in, out       int64
		inPrice, outP Micros
		want          Micros
	}{
		{name: "exact", in: 1000, out: 500, inPrice: 1_000_000, outP: 2_000_000, want: 2_000},
		{name: "no tokens", in: 0, out: 0, inPrice: 1_000_000, outP: 2_000_000, want: 0},
		{name: "free model", in: 1e6, out: 1e6, want: 0},
		{name: "one million tokens at 2.50", in: 1_000_000, inPrice: 2_500_000, want: 2_500_000},
		{name: "fraction of a micro rounds up to one", in: 1, inPrice: 150_000, want: 1},
		{name: "half a micro rounds up", in: 333, inPrice: 500_000, want: 167},
		{name: "just over a whole micro rounds up", in: 1_000_001, inPrice: 1, want: 2},
		{name: "just under a whole micro rounds up", in: 999_999, inPrice: 1, want: 1},
		{name: "input and output are rounded together, not each", in: 1, out: 1, inPrice: 500_000, outP: 500_000, want: 1},
		{name: "output only", out: 2_000, outP: 15_000_000, want: 30_000},
		{name: "negative tokens count as none", in: -1000, out: 10, inPrice: 1_000_000, outP: 1_000_000, want: 10},
		{name: "negative prices count as zero", in: 1000, out: 1000, inPrice: -5_000_000, outP: 1_000_000, want: 1_000},
		{name: "product beyond 64 bits stays exact", in: 1e12, inPrice: 75_000_000, want: 75_000_000_000_000},
		{name: "result beyond Micros saturates", in: math.MaxInt64, out: math.MaxInt64, inPrice: math.MaxInt64, outP: math.MaxInt64, want: math.MaxInt64},
		{name: "quotient just beyond int64 saturates", in: math.MaxInt64, inPrice: 2_000_000, want: math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Cost(tt.in, tt.out, tt.inPrice, tt.outP); got != tt.want {
				t.Fatalf("Cost = %d (%s), want %d (%s)", int64(got), got, int64(tt.want), tt.want)
			}
		})
	}
}
