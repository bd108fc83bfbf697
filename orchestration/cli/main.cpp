// fulgur: one CLI, one subcommand per job.
#include <CLI/CLI.hpp>
#include <iostream>

#include "orchestration/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"fulgur: MiniMax-01 models served and trained as a system of actors"};
  app.set_version_flag("--version", std::string("fulgur 0.1.0"));
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, fulgur::cli::Run>> commands;
  auto add = [&](const char* name, const char* help, fulgur::cli::Run (*make)(CLI::App&)) {
    CLI::App* sub = app.add_subcommand(name, help);
    commands.emplace_back(sub, make(*sub));
  };
  add("forward", "Run the model over a token list and write all logits to a safetensors file",
      fulgur::cli::add_forward);
  add("generate", "Generate text from a prompt", fulgur::cli::add_generate);
  add("init-model", "Write a random-weight checkpoint (config.json, safetensors, tokenizer.json)",
      fulgur::cli::add_init_model);
  add("serve", "Serve a model over HTTP (OpenAI API: completions, chat completions, SSE streaming)",
      fulgur::cli::add_serve);
  add("node", "Host actors for a serving process on this machine (multi-process placement)",
      fulgur::cli::add_node);
  auto known = [&](const std::string& name) {
    for (auto& [sub, run] : commands) {
      if (sub->get_name() == name) return true;
    }
    return false;
  };
  if (argc > 1 && argv[1][0] != '-' && !known(argv[1])) {
    std::cerr << "fulgur: unknown command '" << argv[1] << "' (commands: forward, generate, init-model, serve, node; see --help)\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& [sub, run] : commands) {
    if (sub->parsed()) return run();
  }
  return 2;
}
