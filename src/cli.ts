console.error("edgellm CLI: not yet written"); process.exit(1);
