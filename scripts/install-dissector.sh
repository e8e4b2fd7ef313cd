#!/usr/bin/env bash
# Installs tunlab's Wireshark dissector (wireshark/tunlab.lua) for your user,
# so Wireshark and tshark name the messages of steps 02, 04 and 06:
#
#   scripts/install-dissector.sh
#
# It copies the file into Wireshark's personal Lua plugin folder,
# ~/.local/lib/wireshark/plugins/ (Wireshark 2.5 and later look there;
# Help > About Wireshark > Folders shows it). To try it without installing:
#   tshark -X lua_script:wireshark/tunlab.lua -r pcaps/step04/underlay.pcap
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$HOME/.local/lib/wireshark/plugins"
mkdir -p "$dir"
cp wireshark/tunlab.lua "$dir/tunlab.lua"
echo "installed $dir/tunlab.lua; restart Wireshark (or reload Lua plugins: Analyze > Reload Lua Plugins)"
