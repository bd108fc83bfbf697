#include <gtest/gtest.h>

#include "devices/device.h"
#include "devices/tensor.h"
#include "kernels/half.h"

namespace fulgur {
namespace {

TEST(Tensor, ShapeStridesViewsShareTheOwner) {
  Tensor t = Tensor::empty(DType::f32, {4, 3});
  EXPECT_EQ(t.strides(), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(t.numel(), 12);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_TRUE(t.is_contiguous());
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = static_cast<float>(i);
  Tensor r = t.rows(2, 2);
  EXPECT_EQ(r.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(r.data<float>()[0], 6.f);
  EXPECT_EQ(r.owner(), t.owner());
  EXPECT_EQ(t.reshape({12}).data<float>()[11], 11.f);
  EXPECT_EQ(t.describe(), "[4, 3] f32");
}

TEST(Tensor, CastsBetweenFloatTypes) {
  Tensor t = Tensor::empty(DType::f32, {3});
  t.data<float>()[0] = 1.f, t.data<float>()[1] = -2.5f, t.data<float>()[2] = 3.14159f;
  auto b = t.cast(DType::bf16);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->data<uint16_t>()[0], kernels::f32_to_bf16(1.f));
  Tensor back = b->to_f32();
  EXPECT_EQ(back.data<float>()[1], -2.5f);
  EXPECT_NEAR(back.data<float>()[2], 3.14159f, 0.02f);
  EXPECT_FALSE(t.cast(DType::i32).has_value());
}

TEST(Tensor, DtypeNames) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::i8, DType::i32, DType::i64}) {
    EXPECT_EQ(*dtype_from_safetensors(dtype_safetensors_name(dt)), dt);
    EXPECT_EQ(*dtype_from_name(dtype_name(dt)), dt);
  }
  EXPECT_FALSE(dtype_from_safetensors("F64").has_value());
  EXPECT_FALSE(dtype_from_name("float").has_value());
}

TEST(Devices, CpuAlwaysPresentAndSelectable) {
  auto devices = available_devices();
  ASSERT_FALSE(devices.empty());
  EXPECT_EQ(devices[0].name, "cpu");
  EXPECT_TRUE(devices[0].can_run_model);
  EXPECT_TRUE(select_device("cpu").has_value());
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "cpu0"}) {
    auto d = select_device(bad);
    ASSERT_FALSE(d.has_value()) << bad;
    EXPECT_EQ(d.error().code(), Errc::invalid_argument) << bad;
  }
  // A CUDA device is selectable exactly when this machine has one (and the build the backend).
  bool has_cuda = false;
  for (const DeviceInfo& d : devices) has_cuda = has_cuda || d.device.kind == DeviceKind::cuda;
  EXPECT_EQ(select_device("cuda").has_value(), has_cuda);
  auto missing = select_device("cuda:4096");
  ASSERT_FALSE(missing.has_value());
  EXPECT_TRUE(missing.error().code() == Errc::not_found || missing.error().code() == Errc::unsupported);
}

}  // namespace
}  // namespace fulgur
