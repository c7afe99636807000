"""The git adapter: worktrees and git objects (dulwich, the git CLI where dulwich falls short),
checkouts, the containers' private git dirs, notes and the hooks we install."""
