package server

import (
	"strings"
	"testing"
)

func TestIsSingleEmoji(t *testing.T) {
	for _, s := range []string{
		"👍", "❤️", "❤", "😂", "👍🏽", "🇫🇷", "1️⃣", "#⃣", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🧑🏿‍💻", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️", "⭐",
	} {
		if !isSingleEmoji(s) {
			t.Errorf("isSingleEmoji(%q) = false, want true", s)
		}
	}
	for _, s := range []string{
		"", "a", "ab", "1", "👍👍", "👍 ", " 👍", "🇫", "🇫🇷🇩🇪", "👍a", "\u200d👍", "👍\u200d", "🏽", "\ufe0f",
		"😀\u0301", "\xff", "🏴󠁧󠁢", strings.Repeat("👨‍", 20) + "👦", "<b>",
	} {
		if isSingleEmoji(s) {
			t.Errorf("isSingleEmoji(%q) = true, want false", s)
		}
	}
}
