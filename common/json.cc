// Boost.JSON's implementation, compiled once for the whole build (see common/CMakeLists.txt):
// the library is used header-only, so a host needs Boost's headers and no Boost binaries.
#include <boost/json/src.hpp>  // IWYU pragma: keep
