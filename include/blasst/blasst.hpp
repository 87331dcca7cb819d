// blasst: BLASST dynamic block-sparse attention. The umbrella header of the C++ API.
#pragma once

#include "blasst/calibrate.hpp"
#include "blasst/cpu/engine.hpp"
#include "blasst/device.hpp"
#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"
#include "blasst/skip_vote.hpp"
#include "blasst/types.hpp"
