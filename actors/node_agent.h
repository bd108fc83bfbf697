// Node agent: one per process; hosts the actors the placement puts on that process
// (architecture.md §1).
//
// `fulgur node --listen HOST:PORT` publishes an agent with the CAF middleman; the serving process
// connects to it (remote_actor), says hello (its process index in the cluster and the model
// directory: the node loads that checkpoint itself and answers with its host, pid, UCX address
// and a fingerprint of the model it loaded), sends the data-plane peer table, then asks it to
// spawn actors (SpawnSpec). The serving process has an agent of its own, in process, for the
// actors it hosts, so one code path spawns every actor.
//
// The agent monitors whoever said hello: when that serving process goes away, the actors spawned
// for it are shut down and the node waits for the next one (the model stays loaded).
//
// Loading a checkpoint at hello blocks one CAF worker thread for the load (a node has nothing
// else to do then). The agent is not detached: ~actor_system waits for a detached actor's last
// reference, and the middleman keeps one to a published actor for a while after it quit.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <caf/actor_system.hpp>

#include "actors/layers/model.h"
#include "protocols/serving/interfaces.h"

namespace fulgur::serving {

class DataPlane;

using ModelLoader = std::function<Expected<std::shared_ptr<const Model>>(const std::string& model_dir)>;

struct NodeAgentOptions {
  std::string name = "local";
  std::shared_ptr<const Model> model;  // preloaded (the serving process), or null: `load` at hello
  ModelLoader load;
  // The process's data plane; null: created at hello (a node), or none (a one-process engine).
  std::shared_ptr<DataPlane> data_plane;
  std::chrono::milliseconds receive_timeout{30000};  // data-plane waits of the actors it spawns
};

node_agent_actor spawn_node_agent(caf::actor_system& sys, NodeAgentOptions options);

// A short hash of the model's config and of samples of every weight tensor: two processes with
// equal fingerprints serve the same model.
std::string model_fingerprint(const Model& model);

}  // namespace fulgur::serving
