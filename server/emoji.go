package server

import "unicode/utf8"

// maxEmojiBytes bounds a reaction; the schema's CHECK on message_reactions
// holds the same bound. The longest emoji in use (ZWJ families, subdivision
// flags) take under 40 bytes.
const maxEmojiBytes = 64

// isSingleEmoji reports whether s is exactly one emoji, one grapheme as
// users see it: a pictograph with an optional presentation selector, skin
// tone and tag sequence (subdivision flags), or several of those joined by
// ZWJ (families, professions); a flag (two regional indicators); or a keycap.
// Unicode's Extended_Pictographic property, which Go's unicode package lacks,
// is approximated by its blocks (isPictograph).
func isSingleEmoji(s string) bool {
	if s == "" || len(s) > maxEmojiBytes || !utf8.ValidString(s) {
		return false
	}
	rs := []rune(s)
	switch r := rs[0]; {
	case isRegionalIndicator(r):
		return len(rs) == 2 && isRegionalIndicator(rs[1])
	case r >= '0' && r <= '9', r == '#', r == '*':
		rest := rs[1:]
		if len(rest) > 0 && rest[0] == 0xFE0F {
			rest = rest[1:]
		}
		return len(rest) == 1 && rest[0] == 0x20E3
	}
	for i := 0; ; {
		if i >= len(rs) || !isPictograph(rs[i]) {
			return false
		}
		i++
		if i < len(rs) && rs[i] == 0xFE0F {
			i++
		}
		if i < len(rs) && rs[i] >= 0x1F3FB && rs[i] <= 0x1F3FF { // skin tone
			i++
		}
		if i < len(rs) && rs[i] >= 0xE0020 && rs[i] <= 0xE007E { // tag sequence, ended by CANCEL TAG
			for i < len(rs) && rs[i] >= 0xE0020 && rs[i] <= 0xE007E {
				i++
			}
			if i >= len(rs) || rs[i] != 0xE007F {
				return false
			}
			i++
		}
		if i == len(rs) {
			return true
		}
		if rs[i] != 0x200D { // ZWJ: another pictograph follows
			return false
		}
		i++
	}
}

func isRegionalIndicator(r rune) bool { return r >= 0x1F1E6 && r <= 0x1F1FF }

// isPictograph approximates Extended_Pictographic: the emoji blocks of the
// supplementary planes (less the regional indicators and skin tones, which
// only modify) and the symbols of the basic plane that have emoji forms.
func isPictograph(r rune) bool {
	switch {
	case r >= 0x1F000 && r <= 0x1FAFF:
		return !isRegionalIndicator(r) && (r < 0x1F3FB || r > 0x1F3FF)
	case r >= 0x1FC00 && r <= 0x1FFFD, r >= 0x2600 && r <= 0x27BF, r >= 0x2190 && r <= 0x21FF,
		r >= 0x2300 && r <= 0x23FF, r >= 0x25A0 && r <= 0x25FF, r >= 0x2900 && r <= 0x297F,
		r >= 0x2B00 && r <= 0x2BFF:
		return true
	}
	switch r {
	case 0x00A9, 0x00AE, 0x203C, 0x2049, 0x2122, 0x2139, 0x24C2, 0x3030, 0x303D, 0x3297, 0x3299:
		return true
	}
	return false
}
