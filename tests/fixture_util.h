// Where the model fixtures are (tests/fixtures/README.md) and which exist. FULGUR_SOURCE_DIR in the
// environment overrides the build's source tree (binaries built on one machine and run from a copy of the
// tree on another, e.g. the GPU machine).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace fulgur::test {

inline std::filesystem::path source_dir() {
  const char* env = std::getenv("FULGUR_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? std::filesystem::path(env) : std::filesystem::path(FULGUR_SOURCE_DIR);
}

inline std::filesystem::path fixtures_dir() { return source_dir() / "tests/fixtures/models"; }

// Every fixture directory holding a reference.safetensors, sorted.
inline std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(fixtures_dir())) {
    if (std::filesystem::exists(e.path() / "reference.safetensors")) names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace fulgur::test
