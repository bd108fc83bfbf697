#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "orchestration/cli/commands.h"
#include "orchestration/init_model.h"

namespace fulgur::cli {

namespace {
struct InitArgs {
  std::string config, out, dtype = "bf16", naming = "official";
  uint64_t seed = 0;
  double shard_mb = 0;
};

int run_init(const InitArgs& a) {
  ModelConfig cfg = demo_model_config();
  if (!a.config.empty()) {
    auto parsed = load_model_config(a.config);
    if (!parsed) return fail("init-model", parsed.error());
    cfg = *parsed;
  }
  auto dtype = dtype_from_name(a.dtype);
  if (!dtype) return fail("init-model", dtype.error());
  InitModelOptions opt;
  opt.seed = a.seed;
  opt.dtype = *dtype;
  opt.naming = a.naming == "transformers" ? WeightNaming::transformers : WeightNaming::official;
  opt.max_shard_bytes = static_cast<uint64_t>(a.shard_mb * 1024 * 1024);
  if (auto st = init_model(cfg, a.out, opt); !st.is_ok()) return fail("init-model", st);
  std::cerr << "wrote a random " << cfg.num_hidden_layers << "-layer model (hidden " << cfg.hidden_size << ", "
            << cfg.num_local_experts << " experts, vocab " << cfg.vocab_size << ") to " << a.out << "\n";
  return 0;
}
}  // namespace

Run add_init_model(CLI::App& app) {
  auto a = std::make_shared<InitArgs>();
  app.add_option("--config", a->config, "config.json to use (default: the embedded demo model)");
  app.add_option("--out", a->out, "Output directory")->required();
  app.add_option("--seed", a->seed, "Weight seed")->required();
  app.add_option("--dtype", a->dtype, "Weight dtype")->check(CLI::IsMember({"bf16", "f32", "f16"}));
  app.add_option("--naming", a->naming, "Tensor names")->check(CLI::IsMember({"official", "transformers"}));
  app.add_option("--shard-mb", a->shard_mb, "Split the weights into shards of at most this many MiB")
      ->check(CLI::NonNegativeNumber);
  return [a] { return run_init(*a); };
}

}  // namespace fulgur::cli
