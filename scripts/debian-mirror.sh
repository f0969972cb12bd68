# Sourced: the Debian mirror apt already uses (check-fresh.sh and
# check-container.sh).  pick_mirror SUITE prints the first URI serving SUITE
# from apt's sources, one-line (.list) and deb822 (.sources) formats.

# apt's sources, one "URI SUITE..." line per entry, from the one-line format
# and the deb822 one (.sources), deb entries only.
apt_sources() {
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		sed -n 's/^[ \t]*deb[ \t]\{1,\}\(\[[^]]*\][ \t]\{1,\}\)\{0,1\}\([^ \t]\{1,\}\)[ \t]\{1,\}\([^ \t]\{1,\}\).*/\2 \3/p' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
			function flush() {
				if (deb && enabled && uris != "")
					{ n = split(uris, u, " "); for (i = 1; i <= n; i++) print u[i], suites }
				deb = 0; enabled = 1; uris = ""; suites = ""
			}
			BEGIN { enabled = 1 }
			/^[ \t]*$/ { flush(); next }
			/^[ \t]*#/ { next }
			{
				key = tolower($1); sub(/:$/, "", key)
				val = $0; sub(/^[^:]*:[ \t]*/, "", val)
				if (key == "types") deb = (" " val " " ~ / deb /)
				else if (key == "enabled") enabled = (tolower(val) != "no")
				else if (key == "uris") uris = val
				else if (key == "suites") suites = val
			}
			END { flush() }' "$f"
	done
}
pick_mirror() {
	apt_sources | awk -v s="$1" '{ for (i = 2; i <= NF; i++) if ($i == s) { print $1; exit } }'
}
