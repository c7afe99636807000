"""Shell completion scripts for bash and zsh, generated from the argparse definition.

The word lists (commands, their options, which options take a value) are written into the
script when it is printed, from `cli.build_parser()`, so they always match the version that
printed them; what changes while you work (worktrees, branches, GPUs, images) is looked up by
the script at TAB time with git, nvidia-smi and docker. Load the script at shell start
(`eval "$(git gpuspace completion bash)"`) and it follows upgrades by itself.
"""

from __future__ import annotations

import argparse

from . import __version__, cliwalk

SHELLS = ("bash", "zsh")

# What a value is, by the argparse dest that receives it; anything else is not completed.
_POSITIONAL_KINDS = {"worktree": "worktree", "path": "directory", "commitish": "ref"}
_OPTION_KINDS = {"gpus": "gpus", "image": "image"}


def _kind(dest: str, choices: tuple[str, ...] | None, table: dict[str, str]) -> str | None:
    return "choices" if choices else table.get(dest)


def script(shell: str, parser: argparse.ArgumentParser | None = None) -> str:
    if parser is None:
        from .cli import build_parser

        parser = build_parser()
    if shell == "bash":
        return bash_script(parser)
    if shell == "zsh":
        return zsh_script(parser)
    raise ValueError(f"no completion for {shell!r}; choose one of {', '.join(SHELLS)}")


# ---------------------------------------------------------------------------------------------
# bash


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bash_script(parser: argparse.ArgumentParser) -> str:
    commands = cliwalk.commands(parser)
    names = [name for command in commands for name in (command.name, *command.aliases)]
    global_options = [flag for option in cliwalk.options(parser) for flag in option.flags]
    spec_cases, kind_cases = [], []
    for command in commands:
        pattern = "|".join((command.name, *command.aliases))
        flags = [flag for option in command.options for flag in option.flags]
        valued = [flag for option in command.options if option.takes_value for flag in option.flags]
        spec_cases.append(
            f"\t{pattern})\n"
            f"\t\t__gs_options={_sh_quote(' '.join(flags))}\n"
            f"\t\t__gs_valued={_sh_quote(' '.join(valued))}\n"
            f"\t\t__gs_npositionals={len(command.positionals)}\n"
            "\t\t;;"
        )
        slots = [(f"@{i}", p.dest, p.choices, _POSITIONAL_KINDS) for i, p in enumerate(command.positionals)]
        slots += [(flag, o.dest, o.choices, _OPTION_KINDS) for o in command.options if o.takes_value for flag in o.flags]
        for slot, dest, choices, table in slots:
            kind = _kind(dest, choices, table)
            if kind is None:
                continue
            keys = "|".join(_sh_quote(f"{name} {slot}") for name in (command.name, *command.aliases))
            extra = f" __gs_choices={_sh_quote(' '.join(choices))}" if choices else ""
            kind_cases.append(f"\t{keys}) __gs_kind={kind}{extra} ;;")
    return (
        _BASH_TEMPLATE.replace("@VERSION@", __version__)
        .replace("@COMMANDS@", _sh_quote(" ".join(names)))
        .replace("@GLOBAL_OPTIONS@", _sh_quote(" ".join(global_options)))
        .replace("@SPEC_CASES@", "\n".join(spec_cases))
        .replace("@KIND_CASES@", "\n".join(kind_cases))
    )


_BASH_TEMPLATE = r"""# bash completion for git gpuspace (git-gpuspace @VERSION@), printed by
# `git gpuspace completion bash` from the commands of that version. Load it in ~/.bashrc:
#     eval "$(git gpuspace completion bash)"
# It completes `git gpuspace ...` (git's own completion calls _git_gpuspace) and the
# git-gpuspace command: commands, their options, worktrees (path, directory name, branch),
# branches, directories, GPU indices for --gpus (from nvidia-smi) and local images.

__git_gpuspace_commands=@COMMANDS@
__git_gpuspace_global_options=@GLOBAL_OPTIONS@

# __git_gpuspace_spec <command>: its options, those that take a value, its positional count.
__git_gpuspace_spec ()
{
	__gs_options= __gs_valued= __gs_npositionals=0
	case "$1" in
@SPEC_CASES@
	esac
}

# __git_gpuspace_kind <command> <option or @N for the Nth positional>: what its value is.
__git_gpuspace_kind ()
{
	__gs_kind= __gs_choices=
	case "$1 $2" in
@KIND_CASES@
	esac
}

# __git_gpuspace_reply <suffix> <word>...: add the words that start with the current word
# ($__gs_pfx$__gs_cur) to COMPREPLY, each with the suffix. Bash replaces only what follows
# the last = or : of the word when those are in COMP_WORDBREAKS, so that part is cut off.
__git_gpuspace_reply ()
{
	local sfx=$1 full=$__gs_pfx$__gs_cur keep= w i c
	shift
	for ((i = ${#full} - 1; i >= 0; i--)); do
		c=${full:i:1}
		if [[ ($c == "=" || $c == ":") && ${COMP_WORDBREAKS-} == *"$c"* ]]; then
			keep=${full:0:i+1}
			break
		fi
	done
	for w in "$@"; do
		w=$__gs_pfx$w
		[[ $w == "$full"* ]] && COMPREPLY+=("${w#"$keep"}$sfx")
	done
}

__git_gpuspace_git ()
{
	git ${__git_C_args+"${__git_C_args[@]}"} "$@" 2>/dev/null
}

__git_gpuspace_directories ()
{
	local -a dirs=()
	mapfile -t dirs < <(compgen -d -- "$__gs_cur")
	__git_gpuspace_reply / "${dirs[@]}"
}

# A worktree is named by its path, its directory name or its branch.
__git_gpuspace_worktrees ()
{
	local line path
	local -a names=()
	while IFS= read -r line; do
		case $line in
		"worktree "*)
			path=${line#worktree }
			names+=("$path" "${path##*/}")
			;;
		"branch refs/heads/"*)
			names+=("${line#branch refs/heads/}")
			;;
		esac
	done < <(__git_gpuspace_git worktree list --porcelain)
	__git_gpuspace_reply " " "${names[@]}"
	case $__gs_cur in
	*/* | .* | "~"*) __git_gpuspace_directories ;;
	esac
}

__git_gpuspace_refs ()
{
	local -a refs=()
	mapfile -t refs < <(__git_gpuspace_git for-each-ref --format='%(refname:short)' refs/heads refs/tags refs/remotes)
	__git_gpuspace_reply " " "${refs[@]}"
}

# --gpus: all, none, or indices each followed by a comma (a lone number is a count: GPU 1
# alone is `1,`); after `0,` the other indices follow.
__git_gpuspace_gpus ()
{
	local head= idx
	local -a ids=() words_=()
	case $__gs_cur in
	*,*) head=${__gs_cur%,*}, ;;
	esac
	if type -P nvidia-smi >/dev/null; then
		mapfile -t ids < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)
	fi
	for idx in "${ids[@]}"; do
		idx=${idx%%,*}
		idx=${idx//[[:space:]]/}
		[[ -n $idx && ,$head != *",$idx,"* ]] && words_+=("$head$idx,")
	done
	__git_gpuspace_reply "" "${words_[@]}"
	[[ -n $head ]] || __git_gpuspace_reply " " all none
}

__git_gpuspace_images ()
{
	local -a images=()
	if type -P docker >/dev/null; then
		mapfile -t images < <(docker image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -v '<none>')
	fi
	__git_gpuspace_reply " " "${images[@]}"
}

__git_gpuspace_value ()
{
	__git_gpuspace_kind "$1" "$2"
	case $__gs_kind in
	choices) __git_gpuspace_reply " " $__gs_choices ;;
	directory) __git_gpuspace_directories ;;
	gpus) __git_gpuspace_gpus ;;
	image) __git_gpuspace_images ;;
	ref) __git_gpuspace_refs ;;
	worktree) __git_gpuspace_worktrees ;;
	esac
}

# Called by git's completion with words, cword and cur set (and __git_cmd_idx on the word
# `gpuspace`), or by __git_gpuspace_main for the git-gpuspace command.
_git_gpuspace ()
{
	local __gs_cur=$cur __gs_pfx= __gs_command= __gs_word __gs_kind __gs_choices
	local __gs_options= __gs_valued= __gs_npositionals=0
	local i start=${__git_cmd_idx:-} npos=0 skip=0 dashdash=0
	COMPREPLY=()
	if [[ -z $start ]]; then
		for ((start = 0; start < cword; start++)); do
			[[ ${words[start]} == gpuspace || ${words[start]} == *git-gpuspace ]] && break
		done
	fi
	for ((i = start + 1; i < cword; i++)); do
		__gs_word=${words[i]}
		if ((skip)); then
			skip=0
		elif [[ -z $__gs_command ]]; then
			[[ $__gs_word == -* ]] && continue
			__gs_command=$__gs_word
			__git_gpuspace_spec "$__gs_command"
		elif ((!dashdash)) && [[ $__gs_word == -- ]]; then
			dashdash=1
		elif ((!dashdash)) && [[ $__gs_word == -* ]]; then
			[[ $__gs_word != *=* && " $__gs_valued " == *" $__gs_word "* ]] && skip=1
		else
			((npos++))
		fi
	done

	if [[ -z $__gs_command ]]; then
		case $__gs_cur in
		-*) __git_gpuspace_reply " " $__git_gpuspace_global_options ;;
		*) __git_gpuspace_reply " " $__git_gpuspace_commands ;;
		esac
		return 0
	fi
	if ((skip)); then
		__git_gpuspace_value "$__gs_command" "${words[cword - 1]}"
		return 0
	fi
	if ((!dashdash)); then
		case $__gs_cur in
		--*=*)
			__gs_pfx=${__gs_cur%%=*}=
			__gs_cur=${__gs_cur#*=}
			__git_gpuspace_value "$__gs_command" "${__gs_pfx%=}"
			return 0
			;;
		-*)
			__git_gpuspace_reply " " $__gs_options
			return 0
			;;
		esac
	fi
	if ((npos < __gs_npositionals)); then
		__git_gpuspace_value "$__gs_command" "@$npos"
	elif ((!dashdash)); then
		__git_gpuspace_reply " " $__gs_options
	fi
	return 0
}

# The git-gpuspace command, completed the way git's completion completes `git gpuspace`.
__git_gpuspace_main ()
{
	local cur words cword prev __git_cmd_idx=0 line
	if declare -F _get_comp_words_by_ref >/dev/null; then
		_get_comp_words_by_ref -n =: cur words cword prev
	else
		line=${COMP_LINE:0:COMP_POINT}
		read -r -a words <<<"$line"
		[[ ${#words[@]} -eq 0 || $line == *[[:space:]] ]] && words+=("")
		cword=$((${#words[@]} - 1))
		cur=${words[cword]}
		prev=${words[cword - 1]}
	fi
	_git_gpuspace
}

complete -o bashdefault -o default -o nospace -F __git_gpuspace_main git-gpuspace
"""


# ---------------------------------------------------------------------------------------------
# zsh


def _zsh_explanation(text: str) -> str:
    """argparse help as an _arguments explanation: brackets and colons quoted."""
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")


_ZSH_ACTIONS = {
    "worktree": "__git_gpuspace_worktrees",
    "directory": "_directories",
    "ref": "__git_gpuspace_refs",
    "gpus": "__git_gpuspace_gpus",
    "image": "__git_gpuspace_images",
}


def _zsh_action(kind: str | None, choices: tuple[str, ...] | None) -> str:
    if kind == "choices":
        return "(" + " ".join(choices or ()) + ")"
    return _ZSH_ACTIONS.get(kind or "", " ")


def _zsh_option_specs(options: list[cliwalk.Option] | tuple[cliwalk.Option, ...]) -> list[str]:
    specs = []
    for option in options:
        exclusive = f"({' '.join(option.flags)})" if len(option.flags) > 1 else ""
        if option.dest in ("help", "version"):
            exclusive = "(- : *)"
        for flag in option.flags:
            spec = f"{exclusive}{flag}"
            if option.takes_value:
                spec += "=" if flag.startswith("--") else "+"
            spec += f"[{_zsh_explanation(option.help)}]"
            if option.takes_value:
                message = (option.metavar or option.dest).strip("<>").lower().replace(":", "\\:")
                spec += f":{message}:{_zsh_action(_kind(option.dest, option.choices, _OPTION_KINDS), option.choices)}"
            specs.append(spec)
    return specs


def zsh_script(parser: argparse.ArgumentParser) -> str:
    commands = cliwalk.commands(parser)
    described = []
    cases = []
    for command in commands:
        for name in (command.name, *command.aliases):
            described.append(f"{name}:{command.summary}")
        specs = _zsh_option_specs(command.options)
        for positional in command.positionals:
            kind = _kind(positional.dest, positional.choices, _POSITIONAL_KINDS)
            colons = "::" if positional.optional else ":"
            specs.append(f"{colons}{positional.metavar}:{_zsh_action(kind, positional.choices)}")
        arguments = " \\\n\t\t\t\t".join(_sh_quote(spec) for spec in specs)
        pattern = "|".join((command.name, *command.aliases))
        body = f"_arguments -S \\\n\t\t\t\t{arguments} && ret=0" if specs else "_message 'no arguments' && ret=0"
        cases.append(f"\t\t({pattern})\n\t\t\t{body}\n\t\t\t;;")
    global_specs = _zsh_option_specs(cliwalk.options(parser))
    return (
        _ZSH_TEMPLATE.replace("@VERSION@", __version__)
        .replace("@GLOBAL_SPECS@", " \\\n\t\t".join(_sh_quote(spec) for spec in global_specs))
        .replace("@COMMANDS@", "\n\t\t\t\t".join(_sh_quote(d) for d in described))
        .replace("@CASES@", "\n".join(cases))
    )


_ZSH_TEMPLATE = r"""#compdef git-gpuspace
# zsh completion for git gpuspace (git-gpuspace @VERSION@), printed by
# `git gpuspace completion zsh` from the commands of that version. Load it in ~/.zshrc,
# after compinit:
#     eval "$(git gpuspace completion zsh)"
# or save it as _git-gpuspace in a directory on $fpath. zsh's git completion calls
# _git-gpuspace for `git gpuspace ...`; the git-gpuspace command is completed too.

__git_gpuspace_worktrees () {
	local -a names expl
	local line
	for line in ${(f)"$(git worktree list --porcelain 2>/dev/null)"}; do
		case $line in
			(worktree\ *) names+=("${line#worktree }" "${${line#worktree }:t}") ;;
			(branch\ refs/heads/*) names+=("${line#branch refs/heads/}") ;;
		esac
	done
	_wanted worktrees expl 'worktree (path, directory name or branch)' compadd -a names
}

__git_gpuspace_refs () {
	local -a refs expl
	refs=(${(f)"$(git for-each-ref --format='%(refname:short)' refs/heads refs/tags refs/remotes 2>/dev/null)"})
	_wanted refs expl 'branch or commit' compadd -a refs
}

# --gpus: all, none, or indices each followed by a comma (a lone number is a count).
__git_gpuspace_gpus () {
	local -a indices expl
	if (( $+commands[nvidia-smi] )); then
		indices=(${(f)"$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null)"})
		indices=(${${indices%%,*}//[[:space:]]/})
	fi
	if compset -P '*,'; then
		local -a chosen=(${(s:,:)IPREFIX##*=})
		indices=(${indices:|chosen})
		_wanted gpus expl 'GPU index' compadd -S , -a indices
	else
		_alternative 'specs:GPU spec:(all none)' 'gpus:GPU index:compadd -S , -a indices'
	fi
}

__git_gpuspace_images () {
	local -a images expl
	if (( $+commands[docker] )); then
		images=(${(f)"$(docker image ls --format '{{.Repository}}:{{.Tag}}' 2>/dev/null)"})
		images=(${images:#*\<none\>*})
	fi
	_wanted images expl image compadd -a images
}

_git-gpuspace () {
	local curcontext=$curcontext state state_descr line ret=1
	local -A opt_args
	_arguments -C \
		@GLOBAL_SPECS@ \
		': :->command' \
		'*:: :->argument' && ret=0
	case $state in
		(command)
			local -a gpuspace_commands=(
				@COMMANDS@
			)
			_describe -t commands 'git gpuspace command' gpuspace_commands && ret=0
			;;
		(argument)
			curcontext=${curcontext%:*:*}:git-gpuspace-$words[1]:
			case $words[1] in
@CASES@
			esac
			;;
	esac
	return ret
}

if [[ $funcstack[1] == _git-gpuspace ]]; then
	_git-gpuspace "$@"  # autoloaded from $fpath: complete now
elif (( $+functions[compdef] )); then
	compdef _git-gpuspace git-gpuspace
fi
"""
